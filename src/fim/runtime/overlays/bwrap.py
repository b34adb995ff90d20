"""The native backend: kernel overlayfs mounted by bubblewrap itself.

Nothing is mounted before bubblewrap starts; the backend only contributes
arguments. bubblewrap >= 0.10 is required for --overlay-src/--overlay. A keeper
mounts the same overlay itself, once, for the instances it serves (`keep`).
"""

from __future__ import annotations

import os

from fim.runtime import libc, mounts
from fim.runtime.overlays import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence

    from fim.runtime.overlays import RootSpec
    from fim.runtime.unwind import Stack


def bwrap_args(lowers_top_first: Sequence[str], upper: str, work: str) -> List[str]:
    args: List[str] = []
    # bubblewrap stacks --overlay-src in the order given, first = lowest.
    for lower in reversed(lowers_top_first):
        args += ["--overlay-src", lower]
    return args + ["--overlay", upper, work, "/"]


def build(stack: Stack, spec: RootSpec) -> Root:
    return Root(bwrap_args(spec.lowers, spec.upper, spec.work), [spec.upper, *spec.lowers],
                None)


def keep(stack: Stack, spec: RootSpec) -> Optional[Root]:
    """The overlay bubblewrap would mount, mounted once for a keeper's instances, which
    bind it as "/". A fresh overlay per instance starts with cold caches and asks the
    FUSE layers again for each extended attribute it looks up, one round trip each
    (282 for a python3 start that imports four modules). None where the kernel
    refuses it: each instance then tries bubblewrap's, and falls back as before."""
    if not fits(spec):
        return None
    os.makedirs(spec.mountpoint, exist_ok=True)
    try:
        libc.mount("overlay", spec.mountpoint, "overlay",
                   _options(spec.lowers, spec.upper, spec.work))
    except OSError:
        return None
    merged = mounts.made(stack, spec.mountpoint)
    return Root(["--bind", merged, "/"], [merged], merged)


def _options(lowers: Sequence[str], upper: str, work: str, prefix: str = "") -> str:
    return (f"lowerdir={':'.join(prefix + lower for lower in lowers)},upperdir={prefix}{upper},"
            f"workdir={prefix}{work},userxattr")


def fits(spec: RootSpec) -> bool:
    """Whether the kernel can take the overlay at all: its mount options fit one page,
    and bubblewrap names every directory under /oldroot, so an image with many layers
    (about 55 with this runtime's paths) cannot have it."""
    options = _options(spec.lowers, spec.upper, spec.work, "/oldroot")
    return len(options) < os.sysconf("SC_PAGE_SIZE")


def refused(spec: RootSpec) -> bool:
    """Whether the kernel refuses the overlay bubblewrap tried: the SYS_mount probe,
    the same mount made here (the instance's mount namespace drops it at once)."""
    if not fits(spec):
        return True
    os.makedirs(spec.mountpoint, exist_ok=True)
    options = _options(spec.lowers, spec.upper, spec.work)
    try:
        libc.mount("overlay", spec.mountpoint, "overlay", options)
    except OSError:
        return True
    libc.detach(spec.mountpoint)
    return False

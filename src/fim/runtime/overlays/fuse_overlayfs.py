"""The OVERLAYFS backend: fuse-overlayfs, mounted before bubblewrap starts."""

from __future__ import annotations

from fim.runtime import mounts, tools
from fim.runtime.overlays import OVERLAYFS, Root, alternatives

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence

    from fim.runtime.overlays import RootSpec
    from fim.runtime.unwind import Stack

TOOL = "fuse-overlayfs"


def mount_argv(tool: Sequence[str], lowers_top_first: Sequence[str], upper: str, work: str,
               mountpoint: str) -> List[str]:
    # No squash_to_uid/gid: the instance's user namespace already maps the
    # caller to the owner of the layers' files (see docs/overlays.md).
    # static_nlink: a directory's link count is 1 instead of one counted by reading
    # the directory in every layer on each stat, round trips through the layers' own
    # FUSE daemons that made a cold start 1.8-3x slower (docs/appstart.md). 1 is what
    # btrfs reports and what find and the like read as "not counted".
    options = (f"lowerdir={':'.join(lowers_top_first)},upperdir={upper},workdir={work},"
               "static_nlink")
    return [*tool, "-o", options, mountpoint]


def build(stack: Stack, spec: RootSpec) -> Root:
    tool = tools.require(spec.runtime, TOOL, spec.environ, f"for the {OVERLAYFS.name} overlay",
                         alternatives(OVERLAYFS))
    argv = mount_argv(tool, spec.lowers, spec.upper, spec.work, spec.mountpoint)
    merged = mounts.fuse(stack, argv, spec.environ, f"{spec.logs}/{TOOL}.log", spec.mountpoint,
                         f"the {OVERLAYFS.name} overlay")
    return Root(["--bind", merged, "/"], [merged], merged)


def keep(stack: Stack, spec: RootSpec) -> Optional[Root]:
    return build(stack, spec)  # a mounted root already: the keeper holds it as it is


def fits(spec: RootSpec) -> bool:
    return True


def refused(spec: RootSpec) -> bool:
    return False

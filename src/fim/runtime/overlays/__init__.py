"""Overlay backends behind one interface: one record each, one module each.

A backend's record says what the rest of the runtime needs to know of it
without importing it: its names, its reserved-space bit, the tool it needs, and
the forms of the shared upper directory it reads and leaves (upperdir.py). Its
module (`overlays.<module>`) makes the writable root:

    build(stack, spec: RootSpec) -> Root
        mount what the root needs (pushing every mount on `stack`) and say how
        bubblewrap makes "/" of it;
    refused(spec: RootSpec) -> bool
        asked when bubblewrap ran but the program never started: whether it was
        this backend's root that the host refused (kernel overlayfs, SYS_mount);
    fits(spec: RootSpec) -> bool
        asked before anything starts: whether the root can be made at all (the
        kernel overlay's options must fit one page); if not, the run goes to the
        fallback backend as after a refusal;
    keep(stack, spec: RootSpec) -> Optional[Root]
        the root a keeper holds for the instances it serves, mounted once (the
        FUSE backends' root as `build` makes it; the kernel overlay, which
        bubblewrap would otherwise mount afresh for each instance); None when it
        cannot be held, and each instance builds its own.

Adding a backend is one module and one record in BACKENDS.
"""

from __future__ import annotations

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import List, Mapping, Optional, Sequence, Tuple

    from fim.runtime.layers import Layer

# Forms of the upper directory's deletion markers (whiteouts.py).
KERNEL = "kernel"
FUSE_OVERLAYFS = "fuse-overlayfs"
UNIONFS_FORM = "unionfs"


@dataclass(frozen=True)
class Backend:
    name: str  # printed by fim-overlay show: BWRAP
    option: str  # accepted by fim-overlay set and FIM_OVERLAY: bwrap
    bit: int  # stored at offset 9 of the reserved space (FlatImage's values)
    debug_name: str  # printed with FIM_DEBUG=1: FUSE_OVERLAYFS
    tool: str  # the tool it needs besides bubblewrap, "" for none
    reads: Tuple[str, ...]  # upper-dir forms it reads
    leaves: str  # the form it leaves behind
    module: str  # fim.runtime.overlays.<module>
    stacks_casefold: bool  # whether the case-insensitive view can sit on its root


BWRAP = Backend("BWRAP", "bwrap", 1 << 1, "BWRAP", "", (KERNEL,), KERNEL, "bwrap", False)
OVERLAYFS = Backend("OVERLAYFS", "overlayfs", 1 << 2, "FUSE_OVERLAYFS", "fuse-overlayfs",
                    (KERNEL, FUSE_OVERLAYFS), FUSE_OVERLAYFS, "fuse_overlayfs", True)
UNIONFS = Backend("UNIONFS", "unionfs", 1 << 3, "UNIONFS_FUSE", "unionfs", (UNIONFS_FORM,),
                  UNIONFS_FORM, "unionfs", True)
BACKENDS = (BWRAP, OVERLAYFS, UNIONFS)
DEFAULT = BWRAP
# Where casefold and a refused kernel overlay send a run (the SPEC's choice).
FALLBACK = UNIONFS


@dataclass(frozen=True)
class RootSpec:
    """What a backend builds the root from."""

    layers: Tuple[Layer, ...]  # in mount order, oldest first
    lowers: Tuple[str, ...]  # their mount points, newest first
    upper: str
    work: str  # this instance's work dir
    mountpoint: str  # where a FUSE backend mounts the merged root
    scratch: str  # this instance's own directory, for generated files
    cache: str  # kept across runs of this build (scans of layers)
    logs: str
    runtime: str  # the extracted runtime (embedded tools)
    environ: Mapping[str, str]


@dataclass(frozen=True)
class Root:
    args: List[str]  # bubblewrap arguments that make "/"
    branches: List[str]  # host dirs showing the root unmounted (rootview), top first
    merged: Optional[str]  # the mounted merged root, for a view stacked on it


def from_byte(value: int) -> Optional[Backend]:
    for backend in BACKENDS:
        if value == backend.bit:
            return backend
    return None


def from_option(text: str) -> Optional[Backend]:
    text = text.strip().lower()
    for backend in BACKENDS:
        if text == backend.option:
            return backend
    return None


def choose(environ: Mapping[str, str], stored: int) -> Backend:
    """FIM_OVERLAY (ignored when empty or invalid) > reserved byte > BWRAP."""
    return from_option(environ.get("FIM_OVERLAY", "")) or from_byte(stored) or DEFAULT


def effective(chosen: Backend, casefold: bool) -> Backend:
    """The backend that runs: casefold needs a root it can stack on."""
    return FALLBACK if casefold and not chosen.stacks_casefold else chosen


def implementation(backend: Backend) -> ModuleType:
    """The backend's module, imported only when it runs."""
    name = f"fim.runtime.overlays.{backend.module}"
    return __import__(name, fromlist=["build"])


def alternatives(backend: Backend, others: Sequence[Backend] = BACKENDS) -> str:
    names = "|".join(b.option for b in others if b is not backend)
    return (f"or use another overlay: FIM_OVERLAY={names} for one run, "
            f"fim-overlay set {names} for good")

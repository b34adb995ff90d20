"""The one upper directory that every backend shares, and the form it is kept in.

Each backend needs the upper directory's deletions in a form it reads (see
whiteouts.py). The form the directory is in is recorded in the state file
`.{NAME}.data/overlay.state`; a run converts only when its backend needs
another form, so switching backends costs one walk of the upper directory and
running with the same backend costs one small read.

The state file is also the lock: every running instance holds a shared flock
on it, and a conversion needs it exclusively. A backend switch while another
instance of the image runs with another form is refused, with one clear line,
instead of changing the directory under the running program.
"""

from __future__ import annotations

import fcntl
import os

from fim.runtime import overlays
from fim.runtime.errors import FimError
from fim.runtime.overlays import whiteouts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

KERNEL = "kernel"
FUSE_OVERLAYFS = "fuse-overlayfs"
UNIONFS = "unionfs"
UNKNOWN = "unknown"

# The forms each backend reads, and the form it leaves behind.
_READS = {
    overlays.BWRAP: (KERNEL,),
    overlays.OVERLAYFS: (KERNEL, FUSE_OVERLAYFS),
    overlays.UNIONFS: (UNIONFS,),
}
_LEAVES = {overlays.BWRAP: KERNEL, overlays.OVERLAYFS: FUSE_OVERLAYFS, overlays.UNIONFS: UNIONFS}


def _read_state(fd: int) -> str:
    return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or UNKNOWN


def _write_state(fd: int, form: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, form.encode() + b"\n", 0)
    os.fsync(fd)


def convert(upper: str, current: str, target: str, lowers: Sequence[str]) -> None:
    if current != KERNEL:
        whiteouts.to_canonical(upper, lowers)
    if target == UNIONFS:
        whiteouts.to_unionfs(upper)


def prepare(state_path: str, upper: str, backend: str, lowers: Sequence[str]) -> int:
    """Lock the upper directory for one run of `backend`, converting it if needed.

    Returns the locked file descriptor: keep it open for the whole run.
    """
    fd = os.open(state_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    current = _read_state(fd)
    if current in _READS[backend] and current == _LEAVES[backend]:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FimError(
            f"The data directory '{upper}' is in use by another running instance with "
            f"another overlay ({current}); close it or use the same overlay"
        ) from None
    current = _read_state(fd)
    target = _LEAVES[backend]
    if current not in _READS[backend]:
        _write_state(fd, UNKNOWN)
        convert(upper, current, target, lowers)
    _write_state(fd, target)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def canonicalize(state_path: str, upper: str, lowers: Sequence[str] = ()) -> int:
    """Bring the upper directory to the canonical form and lock it exclusively
    (for commits, which read it while no instance writes)."""
    fd = os.open(state_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FimError(f"The data directory '{upper}' is in use by a running instance") from None
    if _read_state(fd) != KERNEL:
        _write_state(fd, UNKNOWN)
        convert(upper, UNKNOWN, KERNEL, lowers)
        _write_state(fd, KERNEL)
    return fd

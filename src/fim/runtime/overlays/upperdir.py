"""The one upper directory that every backend shares, and the form it is kept in.

Each backend needs the upper directory's deletions in a form it reads (see
whiteouts.py). The form the directory is in is recorded in the state file
`.{NAME}.data/overlay.state`; a run converts only when its backend needs
another form, so switching backends costs one walk of the upper directory and
running with the same backend costs one small read.

The state file is also the lock: every running instance holds a shared flock
on it, and a conversion needs it exclusively. A backend switch while another
instance of the image runs with another form is refused, with one clear line
naming both overlays, instead of changing the directory under the running
program. Starts take their lock one at a time (`_Turn`), so simultaneous
starts wait for each other's conversion instead of seeing a conflict.

Both claims are scoped: the lock is held until the unwind stack it was pushed
on unwinds.
"""

from __future__ import annotations

import fcntl
import os

from fim.runtime.errors import FimError
from fim.runtime.overlays import BACKENDS, DEFAULT, KERNEL, UNIONFS_FORM, whiteouts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

    from fim.runtime.overlays import Backend
    from fim.runtime.unwind import Stack

UNKNOWN = "unknown"


def read_state(fd: int) -> str:
    return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or UNKNOWN


def write_state(fd: int, form: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, form.encode() + b"\n", 0)
    os.fsync(fd)


def convert(upper: str, current: str, target: str, lowers: Sequence[str]) -> None:
    if current != KERNEL:
        whiteouts.to_canonical(upper, lowers)
    if target == UNIONFS_FORM:
        whiteouts.to_unionfs(upper)


def _open(stack: Stack, state_file: str) -> int:
    fd = os.open(state_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    stack.push(os.close, fd)
    return fd


class _Turn:
    """The data directory's claim mutex: an exclusive flock on the directory itself,
    held only while a run takes its lock on the state file (and converts).

    Every shared lock on the state file is taken under it, so whoever holds the
    mutex and cannot get the state file exclusively knows that the holders are
    running instances, not starters that have not yet read the state: without it,
    two simultaneous first starts could each hold a shared lock while the other
    tried to upgrade, and both would report a conflict that is not there."""

    def __init__(self, state_file: str) -> None:
        self.fd = os.open(os.path.dirname(os.path.abspath(state_file)),
                          os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> _Turn:
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits for a conversion, at most
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # the lock goes with the descriptor


def _form_name(form: str) -> str:
    """The backend that leaves `form`, as fim-overlay names it."""
    for backend in BACKENDS:
        if backend.leaves == form:
            return backend.name
    return "unknown (its conversion was interrupted)"


def _conflict(upper: str, theirs: str, backend: Backend) -> FimError:
    return FimError(
        f"The data directory '{upper}' is in use by a running instance with the "
        f"{_form_name(theirs)} overlay, and this run needs the {backend.name} overlay; "
        f"close that instance or run with FIM_OVERLAY={_option(theirs)}"
    )


def _option(form: str) -> str:
    for backend in BACKENDS:
        if backend.leaves == form:
            return backend.option
    return DEFAULT.option


def claim(stack: Stack, state_file: str, upper: str, backend: Backend,
          lowers: Sequence[str]) -> None:
    """Lock the upper directory for one run of `backend` (shared with the other
    instances), converting it first if it is in another form."""
    fd = _open(stack, state_file)
    with _Turn(state_file):
        fcntl.flock(fd, fcntl.LOCK_SH)
        current = read_state(fd)
        if current in backend.reads and current == backend.leaves:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Every shared holder took its lock under the turn: a running instance.
            raise _conflict(upper, read_state(fd), backend) from None
        current = read_state(fd)
        if current not in backend.reads:
            write_state(fd, UNKNOWN)
            convert(upper, current, backend.leaves, lowers)
        write_state(fd, backend.leaves)
        fcntl.flock(fd, fcntl.LOCK_SH)


def canonical(stack: Stack, state_file: str, upper: str, lowers: Sequence[str] = ()) -> None:
    """Bring the upper directory to the canonical form and lock it exclusively (for
    commits, which read it while no instance writes)."""
    fd = _open(stack, state_file)
    with _Turn(state_file):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FimError(f"The data directory '{upper}' is in use by a running instance") \
                from None
    if read_state(fd) != KERNEL:
        write_state(fd, UNKNOWN)
        convert(upper, UNKNOWN, KERNEL, lowers)
        write_state(fd, KERNEL)

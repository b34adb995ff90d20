"""File operations on the user's data: durable placement, copies, removal of trees."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    # Told of each entry that could not be removed: (path, is a directory).
    Report = Callable[[str, bool], None]


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(temporary: str, destination: str) -> None:
    """Give a finished file its final name, never replacing an existing file, durably."""
    os.link(temporary, destination)  # fails with FileExistsError instead of replacing
    os.unlink(temporary)
    fsync_path(os.path.dirname(os.path.abspath(destination)))


def beside(destination: str) -> str:
    """A temporary name on the destination's filesystem, so that placing it is a link.
    Unique across instances: inside their PID namespaces every init is process 1."""
    directory, name = os.path.split(os.path.abspath(destination))
    return os.path.join(directory, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.partial")


def copy(source: str, destination: str) -> None:
    """Copy a file's bytes to a new file, fsynced."""
    with open(source, "rb") as src, open(destination, "wb") as dst:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(path: str, contents_only: bool = False, report: Optional[Report] = None) -> int:
    """Remove the tree at `path` (or only what is in it), as far as possible; the number
    of entries that could not go, each told to `report`. Directories without write or
    search permission (an overlay's work dir is mode 000) are opened up first; what is
    already gone is not a failure."""
    failures = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0
    except PermissionError:
        try:
            os.chmod(path, 0o700)
            entries = list(os.scandir(path))
        except OSError:
            entries = []
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            failures += remove_tree(entry.path, report=report)
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        except OSError:
            failures += 1
            if report is not None:
                report(entry.path, False)
    if not contents_only:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            failures += 1
            if report is not None:
                report(path, True)
    return failures

"""The one way into the C library: functions by name, a failure raised as OSError.

The private `_ctypes` module costs a fraction of `import ctypes`, which builds
dozens of classes the runtime never uses; the two classes needed are made once,
when this module is first imported.
"""

from __future__ import annotations

import _ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# mount(2), umount2(2), unshare(2), prctl(2) constants.
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MNT_DETACH = 2
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


class _CInt(_ctypes._SimpleCData):
    _type_ = "i"


class _CLongLong(_ctypes._SimpleCData):
    _type_ = "q"


class _CFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CInt


_PROGRAM = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # NULL: the program itself


def function(name: str) -> Callable[..., int]:
    """The C function `name`; a result of -1 raises OSError with its errno."""
    native = _CFunction(_ctypes.dlsym(_PROGRAM, name))

    def call(*args: Any) -> int:
        result: int = native(*args)
        if result == -1:
            errno = _ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return result

    return call


def longlong(value: int) -> Any:
    """A 64-bit C argument (off_t)."""
    return _CLongLong(value)


def unshare(flags: int) -> None:
    native = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        native(flags)
    else:
        function("unshare")(flags)


def setns(fd: int) -> None:
    native = getattr(os, "setns", None)  # Python 3.12+
    if native is not None:
        native(fd, 0)
    else:
        function("setns")(fd, 0)


def mount(source: str, target: str, fstype: str, options: str, flags: int = 0) -> None:
    function("mount")(os.fsencode(source), os.fsencode(target),
                      os.fsencode(fstype) if fstype else None, flags,
                      os.fsencode(options) if options else None)


def detach(path: str) -> None:
    """Lazy unmount: gone from the tree now, freed when its last user lets go."""
    function("umount2")(os.fsencode(path), MNT_DETACH)


def prctl(option: int, arg: Any) -> None:
    function("prctl")(option, arg, 0, 0, 0)

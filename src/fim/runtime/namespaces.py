"""Private user + mount + PID namespaces for one instance, without external tools.

The runtime moves itself into a new user namespace (the caller mapped to 0,
or root mapped to itself), a new mount namespace and a new PID namespace whose
first child becomes its init. FUSE daemons started by that init live and die
inside it: when the init exits or is killed, the kernel kills every process of
the PID namespace and drops the mount namespace with all its mounts.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MNT_DETACH = 2
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1


def _libc(name: str) -> Callable[..., int]:
    # The private _ctypes module costs a fraction of `import ctypes`, which
    # builds dozens of classes the runtime never uses.
    import _ctypes

    class CInt(_ctypes._SimpleCData):
        _type_ = "i"

    class CFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    handle = _ctypes.dlopen(None, 2)  # type: ignore[arg-type]  # NULL: the program itself
    function = CFunction(_ctypes.dlsym(handle, name))

    def call(*args: Any) -> int:
        result: int = function(*args)
        if result == -1:
            errno = _ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return result

    return call


def unshare(flags: int) -> None:
    native = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        native(flags)
    else:
        _libc("unshare")(flags)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter(uid: int, gid: int, pid: bool = True) -> None:
    """Move this process into new (user and) mount namespaces; its children into a new
    PID one when `pid`. Rootless, the caller becomes 0 with every capability over
    its own files (what commits need to read and clear any file of the upper dir)."""
    pid_flag = CLONE_NEWPID if pid else 0
    if uid == 0:
        # Root keeps every identity: no user namespace, and a mount namespace
        # made private so that no mount propagates back to the host.
        unshare(CLONE_NEWNS | pid_flag)
        _libc("mount")(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        return
    unshare(CLONE_NEWUSER | CLONE_NEWNS | pid_flag)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {gid} 1\n")


def die_with_parent(signal_number: int) -> None:
    _libc("prctl")(PR_SET_PDEATHSIG, signal_number, 0, 0, 0)


MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8


def mount(source: str, target: str, fstype: str, options: str, flags: int = 0) -> None:
    _libc("mount")(os.fsencode(source), os.fsencode(target), os.fsencode(fstype), flags,
                   os.fsencode(options))


def mount_proc() -> None:
    """Mount the PID namespace's own /proc (call as its init).

    bubblewrap finds its children through /proc/<pid>; with the host's /proc those
    numbers would name other processes.
    """
    mount("proc", "/proc", "proc", "", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def detach(path: str) -> None:
    _libc("umount2")(os.fsencode(path), MNT_DETACH)


_JOIN_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


def _setns(path: str) -> None:
    """Enter the namespace at `path` unless this process is already in it."""
    try:
        if os.stat(path).st_ino == os.stat("/proc/self/ns/" + os.path.basename(path)).st_ino:
            return  # entering one's own user namespace fails
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        native = getattr(os, "setns", None)  # Python 3.12+
        if native is not None:
            native(fd, 0)
        else:
            _libc("setns")(fd, 0)
    finally:
        os.close(fd)


def join(pid: int, via: int) -> None:
    """Enter every namespace of process `pid` and its root directory.

    `via` is a process whose user namespace lies between ours and the target's
    (the instance's init): entering it first gives the capabilities that the
    target's other namespaces ask for. The PID namespace applies to children:
    fork afterwards."""
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    _setns(f"/proc/{via}/ns/user")
    for name in _JOIN_ORDER:
        _setns(f"/proc/{pid}/ns/{name}")
    _setns(f"/proc/{pid}/ns/user")
    os.fchdir(root)
    os.chroot(".")
    os.close(root)

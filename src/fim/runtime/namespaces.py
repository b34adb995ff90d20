"""Private user + mount + PID namespaces for one instance, without external tools.

The runtime moves itself into a new user namespace (the caller mapped to 0,
or root mapped to itself), a new mount namespace and a new PID namespace whose
first child becomes its init. FUSE daemons started by that init live and die
inside it: when the init exits or is killed, the kernel kills every process of
the PID namespace and drops the mount namespace with all its mounts.
"""

from __future__ import annotations

import os

from fim.runtime import libc, process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from fim.runtime.idmap import Subordinate


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mapper(sub: Subordinate, uid: int, gid: int, target: int, wake: int, theirs: int,
            log: Optional[str]) -> int:
    """In a child left in the caller's user namespace: wait until `target` has made its
    own, then map the subordinate ids into it with the setuid helpers. Groups first:
    if they fail, nothing is written and the target maps itself alone.

    `theirs`, the pipe's other end, is closed first: held here it would keep the read
    from ever seeing the end of a target killed before it wrote (the helper then
    waited forever, holding whatever the target had locked: a commit's upper dir)."""
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal  # the C module: `signal` imports enum

    os.close(theirs)
    die_with_parent(_signal.SIGKILL)  # nothing of a dead target is worth finishing
    if not os.read(wake, 1):
        return 1  # the target made no namespace
    env = {"PATH": "/usr/bin:/bin"}
    if process.run((sub.newgidmap,) + sub.gid_args(target, gid)[1:], env, log) != 0:
        return 1
    return 2 * (process.run((sub.newuidmap,) + sub.uid_args(target, uid)[1:], env, log) != 0)


def _refusable(step: str, uid: int, flags: int, call: Callable[..., object],
               *args: object) -> None:
    """Make one step of the namespaces (`step` as hostcheck names them); a refusal
    becomes one line that says which restriction of the host it is and how to lift it."""
    try:
        call(*args)
    except OSError as e:
        from fim.runtime import hostcheck

        failure = hostcheck.Failure(step, e.errno or 1, hostcheck.flag_names(flags))
        raise hostcheck.refused(failure, uid) from None


def enter(uid: int, gid: int, pid: bool = True, sub: Optional[Subordinate] = None,
          log: Optional[str] = None, host_mounts: bool = False) -> bool:
    """Move this process into new (user and) mount namespaces; its children into a new
    PID one when `pid`. Rootless, the caller becomes 0 with every capability over
    its own files (what commits need to read and clear any file of the upper dir),
    and with `sub` ids 1..N become its subordinate ids. Whether those were mapped.
    With `host_mounts`, root's namespace still receives what the host mounts later
    (a long-lived keeper: a USB stick plugged in after it started); rootless, the
    kernel makes every mount copied into a less privileged namespace a receiver."""
    pid_flag = libc.CLONE_NEWPID if pid else 0
    if uid == 0:
        # Root keeps every identity: no user namespace, and a mount namespace
        # made private so that no mount propagates back to the host.
        flags = libc.CLONE_NEWNS | pid_flag
        _refusable("unshare", uid, flags, libc.unshare, flags)
        kind = libc.MS_SLAVE if host_mounts else libc.MS_PRIVATE
        _refusable("mount", uid, flags, libc.mount, "none", "/", "", "", libc.MS_REC | kind)
        return False
    helper = wake = -1
    if sub is not None:
        wait_end, wake = os.pipe()
        target = os.getpid()
        helper = process.fork(lambda: _mapper(sub, uid, gid, target, wait_end, wake, log))
        os.close(wait_end)
    flags = libc.CLONE_NEWUSER | libc.CLONE_NEWNS | pid_flag
    try:
        _refusable("unshare", uid, flags, libc.unshare, flags)
    except BaseException:
        if helper > 0:
            os.close(wake)  # end of file: the helper maps nothing
            process.wait(helper)
        raise
    status = 1
    if helper > 0:
        os.write(wake, b"1")
        os.close(wake)
        status = process.wait(helper)
        if status == 0:
            return True
    if status != 2:  # the helper mapped groups but not users: they stay mapped
        _refusable("uid_map", uid, flags, _write, "/proc/self/setgroups", "deny")
        _refusable("uid_map", uid, flags, _write, "/proc/self/gid_map", f"0 {gid} 1\n")
    _refusable("uid_map", uid, flags, _write, "/proc/self/uid_map", f"0 {uid} 1\n")
    return False


def die_with_parent(signal_number: int) -> None:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal_number)


def mount_proc() -> None:
    """Mount the PID namespace's own /proc (call as its init).

    bubblewrap finds its children through /proc/<pid>; with the host's /proc those
    numbers would name other processes.
    """
    libc.mount("proc", "/proc", "proc", "", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)


_JOIN_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


def setns_path(path: str) -> None:
    """Enter the namespace at `path` unless this process is already in it."""
    try:
        if os.stat(path).st_ino == os.stat("/proc/self/ns/" + os.path.basename(path)).st_ino:
            return  # entering one's own user namespace fails
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        libc.setns(fd)
    finally:
        os.close(fd)


def join(pid: int, via: int) -> None:
    """Enter every namespace of process `pid` and its root directory.

    `via` is a process whose user namespace lies between ours and the target's
    (the instance's init): entering it first gives the capabilities that the
    target's other namespaces ask for. The PID namespace applies to children:
    fork afterwards."""
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    setns_path(f"/proc/{via}/ns/user")
    for name in _JOIN_ORDER:
        setns_path(f"/proc/{pid}/ns/{name}")
    setns_path(f"/proc/{pid}/ns/user")
    os.fchdir(root)
    os.chroot(".")
    os.close(root)

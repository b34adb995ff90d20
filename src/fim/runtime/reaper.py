"""PID 1 of the sandbox: the program's helpers get time to save their state at exit.

When the init of a PID namespace exits, the kernel kills every other process in it
at once. With bubblewrap as that init (`--unshare-pid`), the end of the main
program was the end of everything: wineserver never wrote Wine's registry, and
no helper that flushes state on SIGTERM (dconf, a database) got the chance.

So the sandbox's PID namespace has an init of ours: it starts bubblewrap (without
a PID namespace of its own), reaps whatever is orphaned, and when bubblewrap
exits (the main program has ended) sends SIGTERM to every process left and waits
up to the grace period (FIM_EXIT_GRACE seconds, default 5: config.py) before SIGKILL. With
nothing left, it exits at once: a program that leaves nothing behind pays
nothing. A signal sent to the instance (SIGTERM, SIGHUP, SIGINT, SIGQUIT) is sent
to every process of the sandbox, so that all of them can end cleanly; if the
launcher or the instance's init is killed, this process dies with it, and the
kernel then kills the rest.
"""

from __future__ import annotations

import os
import time

from fim.runtime import libc, process

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Mapping, Sequence
else:
    import _signal

_POLL = 0.02  # seconds between checks during the grace period
_FORWARDED = (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT)


def start(argv: Sequence[str], env: Mapping[str, str], seconds: float) -> int:
    """Start `argv` under the init (`_init`) of a new PID namespace; the init's pid.
    The caller's later children are born in its own namespace again."""
    libc.unshare(libc.CLONE_NEWPID)  # for the next child only: it becomes PID 1
    try:
        return process.fork(lambda: _init(argv, env, seconds))
    finally:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)  # the caller's, not the new one
        try:
            libc.setns(own)
        finally:
            os.close(own)


def _init(argv: Sequence[str], env: Mapping[str, str], seconds: float) -> int:
    from fim.runtime import namespaces

    namespaces.die_with_parent(_signal.SIGKILL)
    process.set_title(["fim", "sandbox"])
    # /proc of this PID namespace, in a mount namespace of its own: bubblewrap reads
    # its children by their numbers here.
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount("none", "/", "", "", libc.MS_REC | libc.MS_PRIVATE)
    namespaces.mount_proc()
    main = process.spawn(argv, env)

    def forward(signum: int, _frame: object) -> None:
        # Not to bubblewrap: it would die of it and not report the program's exit code.
        _to_all_but(main, signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    status = _reap_until(main)
    _end_the_rest(seconds)
    return status


def _to_all_but(main: int, signum: int) -> None:
    """`signum` to every process of the namespace (this init's /proc) but `main`."""
    try:
        names = os.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if name.isdigit() and int(name) not in (1, main):
            try:
                os.kill(int(name), signum)
            except (ProcessLookupError, PermissionError):
                pass


def _to_all(signum: int, _frame: object) -> None:
    try:
        os.kill(-1, signum)  # every process of the namespace but this one
    except ProcessLookupError:
        pass


def _reap_until(main: int) -> int:
    """Reap orphans until `main` exits; its exit code."""
    while True:
        reaped = process.reap(block=True)
        if reaped is None:
            return 1
        if reaped[0] == main:
            return reaped[1]


def _end_the_rest(seconds: float) -> None:
    """SIGTERM to what is left, `seconds` to end, then SIGKILL."""
    if not _children_left():
        return
    _to_all(_signal.SIGTERM, None)
    deadline = time.monotonic() + seconds
    while _children_left():
        if time.monotonic() >= deadline:
            _to_all(_signal.SIGKILL, None)
            while _children_left():
                time.sleep(_POLL)
            return
        time.sleep(_POLL)


def _children_left() -> bool:
    """Reap what has exited; whether any process of the namespace is left (every
    orphan is this init's child)."""
    while True:
        reaped = process.reap(block=False)
        if reaped is None:
            return False
        if reaped[0] == 0:
            return True

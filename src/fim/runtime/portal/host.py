"""The host side of the portal: the instance's dispatcher and one handler per call.

The dispatcher is forked by the launcher before it enters any namespace, so it and
everything it starts see the real host, as the caller. It reads call names from the
`requests` FIFO (opened read-write: it never sees an end of file, and a client's
write never blocks), claims each call (`mkdir claim`, which the client's watchdog
also tries: exactly one of them wins) and forks a handler for it. It dies with the
launcher (parent-death signal SIGKILL); a handler gets SIGTERM when the dispatcher
dies, and then ends its call: SIGTERM to the call's session, the grace period,
SIGKILL. The command dies with its handler (SIGKILL), should the handler be killed.

A handler opens the call's FIFOs (the client's readers and writer are already
waiting on them), starts the command in a session of its own (no terminal, its own
process group for forwarded signals), relays its stdout and stderr through pipes of
its own to the client's FIFOs, forwards the signals the client writes to `sig`, and
when the command has ended and what it wrote is drained, writes `status` (atomic
rename) and closes the FIFOs: the client sees the end of file and reads the code.
Relaying rather than handing the FIFOs to the command is what lets a call end when
the command ends even if something it started (a browser xdg-open launched) holds
its output: that output is read and dropped until it closes or the instance ends.
"""

from __future__ import annotations

import os

from fim.runtime import namespaces, process
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple
else:
    import _signal

REQUESTS = "requests"
CALLS = "calls"
# The call directory's files, written by the client.
ARGV, ENV, CWD = "argv", "env", "cwd"
STDIN, STDOUT, STDERR, SIG = "in", "out", "err", "sig"
CLAIM, STATUS = "claim", "status"

_CHUNK = 65536
# Seconds a handler waits for its client to open the call's FIFOs: the client opens
# them before it sends the call, so only a client killed in between makes it wait.
_OPEN_TIMEOUT = 60
_POLL_MS = 50  # where pidfd_open is missing: how often a handler looks for the exit
_GRACE_POLL = 0.02
# What the client may forward (its traps), by the names it writes.
_SIGNALS = {b"INT": _signal.SIGINT, b"TERM": _signal.SIGTERM, b"HUP": _signal.SIGHUP,
            b"QUIT": _signal.SIGQUIT}
# Variables that describe the container rather than what the caller asks for: the
# identity and the shell's state, and whatever names places (search paths,
# directories, homes), which inside are the container's. The host keeps its own.
_CONTAINER_NAMES = frozenset(("USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "_",
                              "TMPDIR", "XAUTHORITY"))


@dataclass(frozen=True)
class Request:
    argv: List[str]
    env: Dict[str, str]
    cwd: str


@dataclass(frozen=True)
class Streams:
    stdin: int  # the call's FIFOs, host side
    stdout: int
    stderr: int
    sig: int


class _Ended(Exception):
    """The dispatcher died (the instance ends): end the call."""


def _ended(_signum: int, _frame: object) -> None:
    raise _Ended


def containers_own(name: str) -> bool:
    return (name in _CONTAINER_NAMES or name.startswith(("FIM_", "LD_"))
            or name.endswith(("PATH", "HOME", "_DIR", "_DIRS")))


def environment(host: Mapping[str, str], caller: Mapping[str, str]) -> Dict[str, str]:
    """The call's environment: the host's, with the caller's variables over it except
    those that are the container's own (containers_own)."""
    env = dict(host)
    for key, value in caller.items():
        if not containers_own(key):
            env[key] = value
    return env


def workdir(asked: str, host: Mapping[str, str]) -> str:
    """The caller's directory when the host has it, else the host's home, else /."""
    for candidate in (asked, host.get("HOME", "")):
        if candidate.startswith("/") and os.path.isdir(candidate):
            return candidate
    return "/"


def _split(data: bytes) -> List[str]:
    """NUL-terminated words (`printf '%s\\0'`, /proc/PID/environ)."""
    words = data.split(b"\0")
    if words and words[-1] == b"":
        words.pop()
    return [os.fsdecode(w) for w in words]


def parse(argv: bytes, env: bytes, cwd: bytes, host: Mapping[str, str]) -> Request:
    """A call as the client wrote it; ValueError when it names no command."""
    words = _split(argv)
    if not words or not words[0]:
        raise ValueError("no command")
    caller = {}
    for entry in _split(env):
        key, sep, value = entry.partition("=")
        if sep and key:
            caller[key] = value
    return Request(words, environment(host, caller), workdir(os.fsdecode(cwd), host))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def valid_name(name: str) -> bool:
    """A call's name as the client makes it (`PID.N`): nothing that leaves calls/."""
    return 0 < len(name) <= 40 and name[0] != "." and all(c in "0123456789." for c in name)


# -- the dispatcher ----------------------------------------------------------------


def dispatch(directory: str, host: Mapping[str, str], grace: float, parent: int,
             title: Sequence[str]) -> int:
    """The dispatcher's life (forked by the launcher `parent`): take calls until killed."""
    namespaces.die_with_parent(_signal.SIGKILL)
    if os.getppid() != parent:
        return 0  # the launcher died before the death signal was set
    os.setsid()  # no terminal: Ctrl-C in it reaches the client, which forwards it
    process.set_title(list(title))
    # Handlers are reaped by the kernel; each turns this back on for its command.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    requests = os.open(os.path.join(directory, REQUESTS), os.O_RDWR)
    me = os.getpid()
    pending = b""
    while True:
        pending += os.read(requests, 4096)
        *lines, pending = pending.split(b"\n")
        if len(pending) > 4096:
            pending = b""  # not a client's: a call name is one short line
        for line in lines:
            _take(directory, line.decode("ascii", "replace"), host, grace, me, title)


def _take(directory: str, name: str, host: Mapping[str, str], grace: float, me: int,
          title: Sequence[str]) -> None:
    if not valid_name(name):
        _log(f"W::Ignoring a call named {name!r}")
        return
    call = os.path.join(directory, CALLS, name)
    try:
        os.mkdir(os.path.join(call, CLAIM))
    except OSError as e:  # taken by the client's watchdog (it gave up), or gone
        _log(f"W::Call {name} not taken: {e.strerror}")
        return
    process.fork(lambda: _serve(call, host, grace, me, title))


def _log(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode(errors="replace"))
    except OSError:
        pass


# -- one call ----------------------------------------------------------------------


def _serve(call: str, host: Mapping[str, str], grace: float, parent: int,
           title: Sequence[str]) -> int:
    """A handler's life: the call from its FIFOs' opening to its status."""
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGTERM, _ended)
    namespaces.die_with_parent(_signal.SIGTERM)
    if os.getppid() != parent:
        return 0
    pid = 0
    try:
        streams = _open(call)
        try:
            request = parse(_read(os.path.join(call, ARGV)), _read(os.path.join(call, ENV)),
                            _read(os.path.join(call, CWD)), host)
        except (OSError, ValueError) as e:
            _write_all(streams.stderr, f"E::The portal got a damaged call: {e}\n".encode())
            _answer(call, streams, 125)
            return 0
        process.set_title(list(title) + request.argv[:1])
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = process.start_session(request.argv, request.env, request.cwd,
                                    (streams.stdin, out_w, err_w), _signal.SIGKILL,
                                    " on the host")
        for fd in (streams.stdin, out_w, err_w):
            os.close(fd)
        code, held = _relay(pid, {out_r: streams.stdout, err_r: streams.stderr}, streams.sig)
        _answer(call, streams, code)
        _discard(held)
        return 0
    except _Ended:
        if pid:
            _end(pid, grace)
        return 0
    except OSError as e:
        _log(f"E::Call {os.path.basename(call)}: {e}")
        return 1


def _open(call: str) -> Streams:
    """The host's ends of the call's FIFOs. The signal FIFO first and read-write: it
    never blocks, and a signal the client forwards from now on is kept."""
    sig = os.open(os.path.join(call, SIG), os.O_RDWR | os.O_NONBLOCK)
    _signal.alarm(_OPEN_TIMEOUT)
    stdin = os.open(os.path.join(call, STDIN), os.O_RDONLY)
    stdout = os.open(os.path.join(call, STDOUT), os.O_WRONLY)
    stderr = os.open(os.path.join(call, STDERR), os.O_WRONLY)
    _signal.alarm(0)
    return Streams(stdin, stdout, stderr, sig)


def _pidfd(pid: int) -> int:
    """A descriptor readable once `pid` exits (Linux 5.3); -1 where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _relay(pid: int, targets: Dict[int, int], sig: int) -> Tuple[int, List[int]]:
    """Relay the command's output until it has exited and what it wrote is passed on;
    forward the client's signals meanwhile. Its exit code, and the pipes something
    it left still holds (to be read and dropped)."""
    import select

    poller = select.poll()
    for fd in targets:
        poller.register(fd, select.POLLIN)
    poller.register(sig, select.POLLIN)
    pidfd = _pidfd(pid)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    live = dict(targets)
    code: Optional[int] = None
    while code is None:
        for fd, _events in poller.poll(None if pidfd >= 0 else _POLL_MS):
            if fd == sig:
                _forward(sig, pid)
            elif fd in live and not _pass(fd, live):
                poller.unregister(fd)
        code = process.poll(pid)
    if pidfd >= 0:
        os.close(pidfd)
    held = []
    for fd in list(live):
        # What the command wrote before it exited is in the pipe: read until empty.
        os.set_blocking(fd, False)
        try:
            while _pass(fd, live):
                pass
        except BlockingIOError:
            held.append(fd)  # still open for writing: something the command started
    return code, held


def _pass(fd: int, live: Dict[int, int]) -> bool:
    """Pass one block from the pipe `fd` to its FIFO; False (and the pipe closed) at its
    end or when the client stopped reading (the command then gets SIGPIPE, as with
    any closed pipe)."""
    block = os.read(fd, _CHUNK)
    if block:
        try:
            _write_all(live[fd], block)
            return True
        except BrokenPipeError:
            pass
    os.close(fd)
    del live[fd]
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _forward(sig: int, pid: int) -> None:
    try:
        names = os.read(sig, 4096).split()
    except BlockingIOError:
        return
    for name in names:
        signum = _SIGNALS.get(name)
        if signum is not None:
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                pass


def _answer(call: str, streams: Streams, code: int) -> None:
    """The exit code for the client, then the end of its output."""
    part = os.path.join(call, STATUS + ".part")
    try:
        with open(part, "w") as f:
            f.write(f"{code}\n")
        os.rename(part, os.path.join(call, STATUS))
    except OSError:
        pass  # the client is gone with its directory
    for fd in (streams.stdout, streams.stderr, streams.sig):
        os.close(fd)


def _discard(held: List[int]) -> None:
    """Read and drop what the command's leftovers write, until they close it: closing
    it under them would kill the programs that do not expect SIGPIPE."""
    for fd in held:
        os.set_blocking(fd, True)
    while held:
        import select

        ready, _, _ = select.select(held, [], [])
        for fd in ready:
            if not os.read(fd, _CHUNK):
                os.close(fd)
                held.remove(fd)


def _end(pid: int, grace: float) -> None:
    """The instance ends: SIGTERM to the call's session, up to `grace` seconds, SIGKILL."""
    import time

    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    try:
        os.killpg(pid, _signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll(pid)  # a zombie still counts as a member of its group
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(_GRACE_POLL)
    try:
        os.killpg(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass

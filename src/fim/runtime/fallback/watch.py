"""The fallback's watcher, and the end of what a fallback run leaves in the host.

Without namespaces nothing ends with the launcher by itself: the FUSE mounts are in
the host's mount table, their daemons are ordinary processes, and proot's tracees
outlive a killed proot. So the program runs under a watcher, a child of the
launcher that is

* the parent of proot and, as a child subreaper, of every process the program
  orphans: what the program leaves is found under it, even after a double fork;
* told by the kernel when the launcher dies (PR_SET_PDEATHSIG, SIGKILL included):
  it then kills every process under it, unmounts every mount of the run (newest
  first, `fusermount3 -u -z` for an ordinary user) and removes the run's
  directories, which the launcher would have done.

Should the watcher die as well (the whole group SIGKILLed), the next fallback run
of the image does the same for every run directory whose launcher is gone
(`sweep`): a mount stays until then, never longer. A directory is removed only
once nothing is mounted under it, so removing it never reaches into a mount.
"""

from __future__ import annotations

import os
import time

from fim.runtime import files, libc, mounts, process
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

    from fim.runtime.unwind import Stack
else:
    import _signal  # `signal` imports enum: milliseconds

_PR_SET_CHILD_SUBREAPER = 36
# How the kernel tells the watcher that the launcher has died: a signal nothing
# else sends it.
_LAUNCHER_GONE = _signal.SIGUSR1
_FORWARDED = (_signal.SIGTERM, _signal.SIGHUP)
_TERMINAL = (_signal.SIGINT, _signal.SIGQUIT)  # the program gets them from the terminal
_POLL = 0.02
# Exit code of a run whose launcher was killed (nobody reads it: 128 + SIGKILL).
_KILLED = 137


class _Gone(Exception):
    """The launcher has died: stop waiting, clean up."""


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(directory: str, mountinfo: str = "/proc/self/mountinfo") -> List[str]:
    """The mount points at or below `directory`, in the order they were made."""
    prefix = directory.rstrip("/") + "/"
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == directory or point.startswith(prefix):
                points.append(point)
    return points


def unmount(point: str, fusermount: Optional[Sequence[str]], env: Mapping[str, str]) -> None:
    """Detach one mount: root with umount2, an ordinary user through the setuid
    fusermount3 (the host's mount table is root's). One already gone is no error."""
    if fusermount is None:
        mounts.detach(point)
    else:
        process.run([*fusermount, "-u", "-z", point], env, os.devnull)


def unmount_all(directory: str, fusermount: Optional[Sequence[str]],
                env: Mapping[str, str]) -> List[str]:
    """Detach every mount under `directory`, newest first; what is still mounted."""
    for point in reversed(mounts_under(directory)):
        try:
            unmount(point, fusermount, env)
        except OSError:
            continue
    return mounts_under(directory)


def remove(directory: str, fusermount: Optional[Sequence[str]],
           env: Mapping[str, str]) -> None:
    """Remove a run's directory, once nothing is mounted under it (never through a
    mount: that would delete the user's files through the overlay)."""
    if not unmount_all(directory, fusermount, env):
        files.remove_tree(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The variable every process of a run starts with (proot's own, pointing into the
# run's directory): how the program's processes are told from others after the fact.
MARK = "PROOT_TMP_DIR"


def _holders(directory: str) -> List[int]:
    """The processes of a dead run: those started with a path of its directory (proot,
    the FUSE daemons) and those started with its mark in their environment (the
    program and what it ran, unless it cleared its environment)."""
    path = os.fsencode(directory.rstrip("/"))
    mark = b"\0" + os.fsencode(MARK) + b"=" + path + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                held = path + b"/" in f.read()
            if not held:
                with open(f"/proc/{name}/environ", "rb") as f:
                    held = mark in b"\0" + f.read() + b"\0"
        except OSError:
            continue
        if held:
            found.append(int(name))
    return found


def sweep(base: str, own: int, fusermount: Optional[Sequence[str]],
          env: Mapping[str, str]) -> None:
    """The run directories under `base` whose launcher and watcher are gone (named by
    the launcher's pid): kill what still runs of them, unmount what they hold, then
    remove them."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == own or _alive(int(name)):
            continue
        directory = os.path.join(base, name)
        holders = _holders(directory)
        process.kill(holders, _signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while not all(_ended(p) for p in holders) and time.monotonic() < deadline:
            time.sleep(_POLL)
        remove(directory, fusermount, env)


def _descendants(root: int) -> List[int]:
    """Every process under `root`, from the parent fields of /proc/*/stat."""
    children: Dict[int, List[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            parent = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found: List[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_all() -> None:
    """SIGKILL every process under this one until none is left (as a subreaper, the
    orphans of the killed ones come back to it and are killed in turn)."""
    me = os.getpid()
    while True:
        process.kill(_descendants(me), _signal.SIGKILL)
        reaped = process.reap(block=False)
        if reaped is None:
            return
        if reaped[0] == 0:
            time.sleep(_POLL)


def _reap_until(main: int) -> int:
    while True:
        reaped = process.reap(block=True)
        if reaped is None:
            return 1
        if reaped[0] == main:
            return reaped[1]


def _ended(pid: int) -> bool:
    """Whether `pid` has exited (a zombie not reaped yet included)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


# Run by the container's /bin/sh, the program's parent under proot: it reports the
# program's exit status (128 + N for signal N) on descriptor STATUS_FD the moment the
# program ends. proot's own exit code is its last tracee's, which may be a helper
# the program left. `trap :` lets the shell outlive the terminal's and the
# instance's signals (the program gets them too) with the default action restored
# in the program.
STATUS_FD = 9
REPORTER = f'trap : INT QUIT TERM HUP; "$@" {STATUS_FD}>&-; echo "$?" >&{STATUS_FD}'


def _status(read_end: int) -> Optional[int]:
    """The status the reporter writes when the program ends; None when it ended without
    (killed). Read up to its newline, not to the end: proot holds the pipe open until
    its last tracee is gone."""
    text = b""
    try:
        while not text.endswith(b"\n"):
            try:
                block = os.read(read_end, 16)
            except InterruptedError:
                continue
            if not block:
                break
            text += block
    finally:
        os.close(read_end)
    word = text.decode("ascii", "replace").strip()
    return int(word) if word.isdigit() else None


def _end_the_rest(main: int, grace: float) -> Optional[int]:
    """The program has ended: SIGTERM to what it left (under proot, or orphaned to this
    subreaper), `grace` seconds, then SIGKILL, as reaper.py does in a namespaced run.
    proot's exit code, if it was reaped meanwhile."""
    me = os.getpid()
    code = None

    def left() -> List[int]:
        return [p for p in _descendants(me) if p != main and not _ended(p)]

    process.kill(left(), _signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        while True:
            reaped = process.reap(block=False)
            if reaped is None or reaped[0] == 0:
                break
            if reaped[0] == main:
                code = reaped[1]
        rest = left()
        if not rest:
            return code
        if time.monotonic() >= deadline:
            process.kill(rest, _signal.SIGKILL)
        time.sleep(_POLL)


def encode(reporter: bool, argv: Sequence[str], env: Mapping[str, str]) -> bytes:
    """The command the launcher hands the watcher: NUL-separated words, the counts first."""
    words = ["1" if reporter else "0", str(len(argv)), *argv]
    words += [f"{k}={v}" for k, v in env.items()]
    return b"\0".join(os.fsencode(w) for w in words)


# What the launcher sends instead of a command when it gives up (a missing program,
# a failed mount) and unwinds its own mounts. Nothing at all means it died.
DISMISSED = b"dismissed"


def decode(raw: bytes) -> Optional[Tuple[bool, List[str], Dict[str, str]]]:
    """The command of `encode`; None when the launcher dismissed the watcher."""
    if raw == DISMISSED:
        return None
    if not raw:
        # The launcher died before it sent anything: its end of the pipe was closed
        # by its death, possibly before the parent-death signal arrives.
        raise _Gone()
    words = [os.fsdecode(w) for w in raw.split(b"\0")]
    count = int(words[1])
    argv = words[2:2 + count]
    env = dict(w.partition("=")[::2] for w in words[2 + count:])
    return words[0] == "1", argv, env


def _watch(command_fd: int, grace: float, launcher: int, directory: str,
           extra: Sequence[str], fusermount: Optional[Sequence[str]],
           host_env: Mapping[str, str], title: Sequence[str]) -> int:
    def gone(_signum: int, _frame: object) -> None:
        raise _Gone()

    main = -1

    def forward(signum: int, _frame: object) -> None:
        # To the program and what it started, not to proot: it would die of it.
        process.kill([p for p in _descendants(os.getpid()) if p != main], signum)

    process.set_title(title)
    for sig in _TERMINAL:
        _signal.signal(sig, _signal.SIG_IGN)
    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    _signal.signal(_LAUNCHER_GONE, gone)
    try:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        libc.prctl(libc.PR_SET_PDEATHSIG, _LAUNCHER_GONE)
        if os.getppid() != launcher:
            raise _Gone()  # it died before the request was in place
        command = decode(process.read_all(command_fd))
        if command is None:
            return 0  # the launcher gave up before the program and unwinds its own mounts
        reporter, argv, env = command
        if not reporter:
            main = process.spawn(argv, env)
            code = _reap_until(main)  # proot waits for every process of the program
        else:
            read_end, write_end = os.pipe()
            os.dup2(write_end, STATUS_FD)  # inheritable: through proot to the reporter
            os.close(write_end)
            main = process.spawn(argv, env)
            os.close(STATUS_FD)
            status = _status(read_end)
            reaped = _end_the_rest(main, grace)
            code = reaped if reaped is not None else _reap_until(main)
            if status is not None:
                code = status
        _kill_all()  # anything still here (a process that ignored SIGTERM and forked)
        return code
    except _Gone:
        _signal.signal(_LAUNCHER_GONE, _signal.SIG_IGN)
        _kill_all()
        remove(directory, fusermount, host_env)
        for d in extra:
            files.remove_tree(d)
        return _KILLED


@dataclass(frozen=True)
class Watcher:
    pid: int
    command_fd: int  # where the launcher writes the command, once, then closes it
    pipe: int  # the pipe's inode: whether command_fd is still it, or reused


def start(stack: Stack, grace: float, directory: str, extra: Sequence[str],
          fusermount: Optional[Sequence[str]], host_env: Mapping[str, str],
          title: Sequence[str]) -> Watcher:
    """Start the watcher before anything is mounted, so that a launcher killed at any
    point leaves nothing: it waits for the command (`run`), and should the launcher die
    first it unmounts what is under `directory`, then removes it and `extra`."""
    launcher = os.getpid()
    read_end, write_end = os.pipe()

    def child() -> int:
        os.close(write_end)
        return _watch(read_end, grace, launcher, directory, extra, fusermount, host_env,
                      title)

    pid = process.fork(child)
    os.close(read_end)
    watcher = Watcher(pid, write_end, os.fstat(write_end).st_ino)
    stack.push(_dismiss, watcher)
    return watcher


def _dismiss(watcher: Watcher) -> None:
    """No command after all: say so and close the pipe (unless `run` sent the command
    and closed it: the number may name another file by now); reap the watcher."""
    try:
        ours = os.fstat(watcher.command_fd).st_ino == watcher.pipe
    except OSError:
        ours = False
    if ours:
        try:
            os.write(watcher.command_fd, DISMISSED)
        except OSError:
            pass  # it is gone already: nothing to tell
        os.close(watcher.command_fd)
    try:
        process.wait(watcher.pid)
    except ChildProcessError:
        pass


def run(watcher: Watcher, argv: Sequence[str], env: Mapping[str, str],
        reporter: bool) -> int:
    """Have the watcher run `argv` (proot); the exit code: the program's as the REPORTER
    shell tells it (`reporter`), else proot's. The watcher gives what the program
    leaves its grace seconds at its end."""
    data = encode(reporter, argv, env)
    while data:
        data = data[os.write(watcher.command_fd, data):]
    os.close(watcher.command_fd)

    def forward(signum: int, _frame: object) -> None:
        process.kill([watcher.pid], signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    return process.wait(watcher.pid)

"""Every process the runtime starts goes through here: spawn, wait, kill, exit codes;
and the title the runtime's own processes show in ps and top.

posix_spawn rather than subprocess: subprocess imports signal, threading,
selectors and more (milliseconds on every start); the tools the runtime runs
need only argv, an environment and where their output goes.
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Mapping, Optional, Sequence, Tuple


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Optional[str] = None,
          append: bool = True, progress: bool = False) -> int:
    """Start `argv`; its pid. With `log`, stdin is /dev/null and stdout and stderr go
    to that file (appended to, or truncated first), stdout to our stderr instead with
    `progress` (a tool's progress bar on the terminal, its messages in the log);
    without `log`, it shares ours."""
    actions: List[Tuple[object, ...]] = []
    if log is not None:
        mode = os.O_APPEND if append else os.O_TRUNC
        to_log = (os.O_WRONLY | os.O_CREAT | mode, 0o644)
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        if progress:
            actions += [(os.POSIX_SPAWN_DUP2, 2, 1), (os.POSIX_SPAWN_OPEN, 2, log, *to_log)]
        else:
            actions += [(os.POSIX_SPAWN_OPEN, 1, log, *to_log), (os.POSIX_SPAWN_DUP2, 1, 2)]
    try:
        return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions,
                              setsigdef=_defaults())
    except OSError as e:
        raise FimError(f"Cannot start '{argv[0]}': {e.strerror}") from None


def _defaults() -> List[int]:
    """Every signal a program may get back at its default. Dispositions we ignore are
    inherited across exec: Python ignores SIGPIPE and SIGXFSZ, the runtime SIGINT and
    SIGQUIT; a program started with them ignored prints "Broken pipe" at the end of
    `yes | head -1` instead of ending quietly, and ignores Ctrl-\\."""
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal  # the C module: `signal` imports enum

    return [s for s in _signal.valid_signals() if s not in (_signal.SIGKILL, _signal.SIGSTOP)]


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def wait(pid: int) -> int:
    """Wait for `pid` (through interruptions by our signal handlers); its exit code."""
    while True:
        try:
            return exit_code(os.waitpid(pid, 0)[1])
        except InterruptedError:
            continue


def poll(pid: int) -> Optional[int]:
    """The exit code of the child `pid` if it has ended (it is reaped); None while it
    runs, or when it is no child of ours (already reaped)."""
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except InterruptedError:
            continue
        except ChildProcessError:
            return None
        return exit_code(status) if done else None


def wait_within(pid: int, seconds: float) -> Optional[int]:
    """The exit code of the child `pid`, or None when it runs past `seconds` (it is then
    killed and reaped). Polls: for the short tools of background work, where a
    blocking wait could hang on a tool that never ends."""
    import time

    deadline = time.monotonic() + seconds
    delay = 0.002
    while True:
        code = poll(pid)
        if code is not None:
            return code
        if time.monotonic() >= deadline:
            kill([pid], 9)
            wait(pid)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def reap(block: bool) -> Optional[Tuple[int, int]]:
    """Any child that has exited, as (pid, exit code), waiting for one when `block`;
    (0, 0) when children are left but none has exited; None when none is left."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except InterruptedError:
            continue
        except ChildProcessError:
            return None
        return (pid, exit_code(status)) if pid else (0, 0)


def run(argv: Sequence[str], env: Mapping[str, str], log: Optional[str] = None,
        append: bool = True, progress: bool = False) -> int:
    return wait(spawn(argv, env, log, append, progress))


def fork(child: Callable[[], int]) -> int:
    """Run `child` in a forked process that exits with its result (1 if it raises,
    never returning into the caller's code); the pid, in the parent."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def start_session(argv: Sequence[str], env: Mapping[str, str], cwd: str,
                  stdio: Tuple[int, int, int], death_signal: int, where: str = "") -> int:
    """Start `argv` (looked up in env's PATH) in `cwd`, in a session of its own: no
    controlling terminal, and a process group to signal as one (its pid). `stdio`
    become its 0, 1, 2; every signal is at its default (ours ignores SIGPIPE); it gets
    `death_signal` when the calling thread ends. Its pid. A program that cannot be
    started says one E:: line on its stderr and exits 127 (not found) or 126.
    fork and exec, not posix_spawn: Python 3.9's has no working directory, no new
    session and no death signal."""
    pid = os.fork()
    if pid == 0:
        code = 126
        try:
            if TYPE_CHECKING:
                import signal as _signal
            else:
                import _signal  # the C module: `signal` imports enum

            os.setsid()
            for target, fd in enumerate(stdio):
                if fd != target:
                    os.dup2(fd, target)
            for signum in range(1, _signal.NSIG):
                try:
                    _signal.signal(signum, _signal.SIG_DFL)
                except (OSError, ValueError, RuntimeError):
                    pass  # SIGKILL, SIGSTOP, the real-time ones the C library keeps
            _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
            from fim.runtime import libc

            libc.prctl(libc.PR_SET_PDEATHSIG, death_signal)
            os.chdir(cwd)
            _exec(argv, env)
        except OSError as e:
            import errno

            code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
            line = f"E::Cannot start '{argv[0]}'{where}: {e.strerror}\n"
            try:
                os.write(2, line.encode(errors="replace"))
            except OSError:
                pass
        finally:
            os._exit(code)
    return pid


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """execvpe, but as a shell reports it: only a file that is there and cannot run
    is 126; PATH entries we may not search or lack count as not found (the C
    library's execvp reports those as EACCES)."""
    name = argv[0]
    dirs = [""] if "/" in name else os.get_exec_path(env)
    failure: Optional[OSError] = None
    for directory in dirs:
        path = os.path.join(directory, name) if directory else name
        if not os.path.isfile(path):
            continue
        try:
            os.execve(path, list(argv), dict(env))
        except OSError as e:
            failure = failure or e
    import errno

    raise failure or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def detach(child: Callable[[], int], keep_fd: int) -> None:
    """Run `child` in a grandchild in a session of its own, holding none of the caller's
    descriptors but `keep_fd` (an inherited lock or pipe would be held for the child's
    whole life); returns once the intermediate process has exited."""
    first = os.fork()
    if first == 0:
        code = 1
        try:
            os.closerange(3, keep_fd)
            os.closerange(keep_fd + 1, 1 << 16)
            os.setsid()
            code = 0 if os.fork() else child()
        finally:
            os._exit(code)
    wait(first)


def kill(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def read_all(fd: int) -> bytes:
    """Everything written to `fd` until its other end closes; `fd` is closed."""
    chunks = []
    try:
        while True:
            try:
                block = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not block:
                break
            chunks.append(block)
    finally:
        os.close(fd)
    return b"".join(chunks)


def capture(argv: Sequence[str], timeout: float) -> Tuple[int, str]:
    """Exit code and output (stdout then stderr) of a short command; (-1, "") when it
    cannot start or runs past `timeout`. Off the start-up path only: it imports
    subprocess."""
    import subprocess

    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return -1, ""
    return out.returncode, out.stdout + "\n" + out.stderr


# -- this process's own title ---------------------------------------------------
#
# The interpreter was started as `python3 -I -S -c '<bootstrap>' IMAGE ARGS...`; ps
# would show all of that. The kernel shows a process's command line from the memory
# its arguments were passed in (arg_start..arg_end of /proc/self/stat), so the title
# is written there through /proc/self/mem, as setproctitle(3) does: the title, a NUL,
# and a non-NUL last byte, which tells the kernel to show the area up to its first
# NUL. The short name top shows (comm) is set with prctl(PR_SET_NAME). Best effort:
# where /proc/self/mem is not writable the title stays as it was.

# /proc/self/stat fields after the ")" that ends comm: arg_start is field 48 of
# proc(5), the 46th after the state field (field 3).
_ARG_START = 48 - 3


def set_title(words: Sequence[str]) -> None:
    """Show this process in ps and top as `words` (`app.flatimage fim-exec sleep 30`)."""
    title = " ".join(words).encode(errors="replace")
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[_ARG_START]), int(fields[_ARG_START + 1])
        room = end - start
        if room < 2:
            return
        title = title[:room - 2]
        fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
        try:
            os.pwrite(fd, title + b"\0" * (room - len(title) - 1) + b"\x01", start)
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return
    try:
        from fim.runtime import libc

        libc.prctl(libc.PR_SET_NAME, os.path.basename(words[0]).encode()[:15])
    except OSError:
        pass

"""The portal end to end: `fim_portal` in a busybox container runs commands on the host,
as root and as an ordinary user. What the host side does is checked on the host
(marker files written by the host commands, /proc), never from inside."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
from conftest import Runner

CLOSED = ("E::The portal is closed: this image was not given the 'portal' permission "
          "(fim-perms add portal)\n")


@pytest.fixture
def portal(image: Path, runner: Runner) -> Path:
    """The runner's image with the portal permission."""
    r = runner.run([str(image), "fim-perms", "add", "portal"])
    assert r.returncode == 0, r.stderr
    return image


def inside(runner: Runner, image: Path, script: str, env: Optional[Dict[str, str]] = None,
           **kw: object) -> subprocess.CompletedProcess:
    return runner.run([str(image), "fim-exec", "sh", "-c", script], env=env, **kw)


def _wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> List[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen[1:]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: it only waits for its parent to read its code)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _launcher(proc: subprocess.Popen, runner: Runner) -> int:
    """The launcher's pid: runuser forks it for the test user."""
    if runner.user is None:
        return proc.pid
    assert _wait_for(lambda: bool(_children(proc.pid)))
    return _children(proc.pid)[0]


def _dispatcher(launcher: int) -> Optional[int]:
    """The launcher's child titled `app.flatimage fim-portal`."""
    found = [p for p in _children(launcher) if _cmdline(p).split()[1:] == ["fim-portal"]]
    return found[0] if found else None


# ---- what a call carries


def test_output_exit_code_and_stderr(portal: Path, runner: Runner) -> None:
    r = inside(runner, portal, "fim_portal echo hi")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")
    r = inside(runner, portal, "fim_portal sh -c 'echo out; echo err >&2; exit 3'")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = inside(runner, portal, "fim_portal sh -c 'kill -TERM $$'")
    assert r.returncode == 128 + signal.SIGTERM


def test_the_command_runs_on_the_host_as_the_caller(portal: Path, runner: Runner,
                                                    workdir: Path) -> None:
    marker = workdir / "host-side"
    r = inside(runner, portal, f"fim_portal sh -c 'id -u > {marker}; hostname'")
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == f"{runner.uid}\n"  # a host file, written by the call
    assert os.stat(marker).st_uid == runner.uid
    assert r.stdout == f"{os.uname().nodename}\n"


def test_stdin_streams_to_the_host(portal: Path, runner: Runner) -> None:
    r = inside(runner, portal, "printf 'line one\\nline two' | fim_portal cat")
    assert (r.returncode, r.stdout) == (0, "line one\nline two"), r.stderr
    # The instance's own stdin, through the container to the host command.
    r = runner.run([str(portal), "fim-exec", "fim_portal", "wc", "-c"], input="x" * 100000)
    assert (r.returncode, r.stdout.strip()) == (0, "100000"), r.stderr


def test_fifty_megabytes_through_stdout(portal: Path, runner: Runner, workdir: Path) -> None:
    data = workdir / "data"
    with open(data, "wb") as f:
        f.write(os.urandom(50 * 1024 * 1024))
    os.chmod(data, 0o644)
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    r = inside(runner, portal, f"fim_portal cat {data} | sha256sum")
    assert (r.returncode, r.stdout.split()[:1], r.stderr) == (0, [expected], "")
    # And through the instance's stdout, to the caller on the host.
    out = subprocess.run(runner.argv([str(portal), "fim-exec", "fim_portal", "cat", str(data)]),
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                         env={**os.environ, **({"HOME": f"/home/{runner.user}"}
                                               if runner.user else {})})
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).hexdigest() == expected


def test_a_hundred_calls_at_once(portal: Path, runner: Runner) -> None:
    script = ("for i in $(seq 100); do"
              " (fim_portal sh -c 'echo $1; exit $(($1 % 7))' call $i > /tmp/o.$i;"
              "  echo $? > /tmp/c.$i) &"
              " done; wait;"
              " for i in $(seq 100); do echo $i $(cat /tmp/o.$i) $(cat /tmp/c.$i); done")
    r = inside(runner, portal, script, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [f"{i} {i} {i % 7}" for i in range(1, 101)]


def test_environment_is_the_hosts_with_the_callers_variables(portal: Path, runner: Runner,
                                                             workdir: Path) -> None:
    host_path = f"{workdir}:/usr/bin:/bin"
    r = inside(runner, portal, "FOO=bar fim_portal sh -c 'echo $FOO; echo $PATH'",
               env={"PATH": host_path + ":/usr/sbin:/sbin"})
    assert r.returncode == 0, r.stderr
    foo, path = r.stdout.splitlines()
    assert foo == "bar"
    # The host's PATH, not the container's: host programs are found.
    assert path == host_path + ":/usr/sbin:/sbin"


def test_working_directory(portal: Path, runner: Runner) -> None:
    r = inside(runner, portal, "cd /tmp && fim_portal pwd")
    assert (r.returncode, r.stdout) == (0, "/tmp\n"), r.stderr
    # A directory the host does not have: the host's home, else /.
    home = f"/home/{runner.user}" if runner.user else os.environ.get("HOME", "/")
    expected = home if os.path.isdir(home) else "/"
    r = inside(runner, portal, "mkdir -p /opt/only-inside && cd /opt/only-inside && fim_portal pwd")
    assert (r.returncode, r.stdout) == (0, expected + "\n"), r.stderr


def test_a_command_the_host_does_not_have(portal: Path, runner: Runner) -> None:
    r = inside(runner, portal, "fim_portal no-such-program-on-the-host arg")
    assert (r.returncode, r.stdout) == (127, "")
    assert r.stderr == ("E::Cannot start 'no-such-program-on-the-host' on the host: "
                        "No such file or directory\n")
    r = inside(runner, portal, "fim_portal false")
    assert (r.returncode, r.stderr) == (1, "")


def test_no_arguments_is_a_usage_error(portal: Path, runner: Runner) -> None:
    r = inside(runner, portal, "fim_portal")
    assert (r.returncode, r.stdout) == (125, "")
    assert r.stderr.startswith("E::Usage: fim_portal") and r.stderr.count("\n") == 1


# ---- desktop uses, with stand-ins for the host's programs


def _stubs(workdir: Path) -> Path:
    """xdg-open and notify-send that record their arguments, first on the host's PATH."""
    stubs = workdir / "stubs"
    stubs.mkdir()
    for name in ("xdg-open", "notify-send"):
        stub = stubs / name
        stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {workdir}/{name}.args\n")
        stub.chmod(0o755)
    os.chmod(stubs, 0o755)
    return stubs


def test_xdg_open_and_notify_send(portal: Path, runner: Runner, workdir: Path) -> None:
    stubs = _stubs(workdir)
    env = {"PATH": f"{stubs}:{os.environ['PATH']}"}
    r = inside(runner, portal, "fim_portal xdg-open 'https://example.org/a b?c=d' && "
               "fim_portal notify-send 'A title' 'The body'", env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert (workdir / "xdg-open.args").read_text() == "https://example.org/a b?c=d\n"
    assert (workdir / "notify-send.args").read_text() == "A title\nThe body\n"


def test_a_call_ends_when_its_command_does(portal: Path, runner: Runner, workdir: Path) -> None:
    """What the command leaves running (a browser xdg-open started) may hold its
    output: the call still ends with the command, and what was left is not cut off
    while the instance runs."""
    left = workdir / "left"
    script = ("start=$(date +%s);"
              f" fim_portal sh -c '(sleep 3; echo still > {left}; echo late) & echo started';"
              " echo code $? after $(($(date +%s) - start)); sleep 5")
    r = inside(runner, portal, script)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert words[:3] == ["started", "code", "0"] and int(words[4]) < 3, r.stdout
    assert left.read_text() == "still\n"  # it went on, its later output dropped


# ---- signals and the instance's end


def _running_call(proc: subprocess.Popen, runner: Runner, ready: Path) -> int:
    """The client script's pid (on the host) once the host command has started."""
    launcher = _launcher(proc, runner)
    assert _wait_for(ready.exists), "the host command never started"
    # The kernel runs the script as `/bin/sh /tmp/.fim-portal/fim_portal ARGS...`; its
    # watchdog is a subshell, a child of it with the same command line.
    scripts = [p for p in _descendants(launcher)
               if _cmdline(p).split()[1:2] == ["/tmp/.fim-portal/fim_portal"]]
    clients = [p for p in scripts if not any(p in _children(q) for q in scripts)]
    assert len(clients) == 1, [(_cmdline(p)) for p in _descendants(launcher)]
    return clients[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_reach_the_host_command(portal: Path, runner: Runner, workdir: Path,
                                        signum: int) -> None:
    ready, got = workdir / "ready", workdir / "got"
    name = signal.Signals(signum).name[3:]
    command = (f"trap 'echo {name} > {got}; exit 9' {name}; touch {ready};"
               " while :; do sleep 0.1; done")
    proc = runner.popen([str(portal), "fim-exec", "fim_portal", "sh", "-c", command],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client = _running_call(proc, runner, ready)
        os.kill(client, signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert got.read_text() == f"{name}\n"
    assert proc.returncode == 9, err


def test_sigterm_to_the_instance_reaches_the_host_command(portal: Path, runner: Runner,
                                                          workdir: Path) -> None:
    ready, got = workdir / "ready", workdir / "got"
    command = (f"trap 'echo TERM > {got}; echo bye; exit 4' TERM; touch {ready};"
               " while :; do sleep 0.1; done")
    proc = runner.popen([str(portal), "fim-exec", "fim_portal", "sh", "-c", command],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        launcher = _launcher(proc, runner)
        assert _wait_for(ready.exists)
        os.kill(launcher, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert got.read_text() == "TERM\n"
    # The client's helpers outlive the instance's SIGTERM: the command's last words
    # and its code come through.
    assert (proc.returncode, out) == (4, b"bye\n"), err


def test_sigkill_of_the_instance_leaves_no_host_process(portal: Path, runner: Runner,
                                                        workdir: Path) -> None:
    pids = workdir / "pids"
    # A command with children in its session, one of which ignores SIGTERM (SIGKILL
    # comes after the grace period); and a second call.
    command = workdir / "command.sh"
    command.write_text(f"sleep 1000 & echo $! >> {pids}\n"
                       f"(trap '' TERM; exec sleep 1000) & echo $! >> {pids}\n"
                       f"echo $$ >> {pids}\nwait\n")
    command.chmod(0o755)
    proc = runner.popen([str(portal), "fim-exec", "sh", "-c",
                         f"fim_portal sh {command} & fim_portal sleep 1000 & wait"],
                        env={**os.environ, "FIM_EXIT_GRACE": "1"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        launcher = _launcher(proc, runner)
        assert _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3)
        dispatcher = _dispatcher(launcher)
        assert dispatcher is not None, [_cmdline(p) for p in _children(launcher)]
        # Two handlers; the first call's sh and its two sleeps, the second's sleep.
        assert _wait_for(lambda: len(_descendants(dispatcher)) == 2 + 4)  # type: ignore
        handlers = _children(dispatcher)
        host = _descendants(dispatcher)
        os.kill(launcher, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not any(_alive(p) for p in host), 15), \
            [_cmdline(p) for p in host if _alive(p)]
    finally:
        proc.kill()
    assert not _alive(dispatcher) and not any(_alive(p) for p in handlers)
    assert not any(_alive(int(p)) for p in pids.read_text().split())


def test_a_host_side_that_is_gone_fails_the_call(portal: Path, runner: Runner) -> None:
    """The dispatcher dies while the instance runs: a call fails with one line, no hang."""
    # The call comes once the dispatcher is killed (the container does not see the
    # host's files: a delay, not a marker).
    script = "sleep 3; fim_portal echo hi; echo code $?"
    proc = runner.popen([str(portal), "fim-exec", "sh", "-c", script],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        launcher = _launcher(proc, runner)
        assert _wait_for(lambda: _dispatcher(launcher) is not None)
        os.kill(_dispatcher(launcher), signal.SIGKILL)  # type: ignore[arg-type]
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, b"code 125\n")
    assert err == b"E::The portal is not answering: its host side is gone\n"


# ---- the permission


def test_permission_off_runs_nothing_on_the_host(image: Path, runner: Runner,
                                                 workdir: Path) -> None:
    marker = workdir / "ran"
    r = inside(runner, image, f"fim_portal touch {marker}")
    assert (r.returncode, r.stdout, r.stderr) == (125, "", CLOSED)
    assert not marker.exists()
    r = runner.run([str(image), "fim-exec", "true"], env={"FIM_DEBUG": "1"})
    assert "D::Permissions: none" in r.stdout.splitlines()
    assert "/tmp/.fim-portal/host" not in r.stdout


def test_debug_lists_the_portal(portal: Path, runner: Runner) -> None:
    r = runner.run([str(portal), "fim-exec", "true"], env={"FIM_DEBUG": "1"})
    lines = r.stdout.splitlines()
    assert "D::Permissions: portal" in lines
    assert any(ln.startswith("D::Permission: bind ") and ln.endswith(
        "/portal /tmp/.fim-portal/host") for ln in lines), lines
    assert any(ln.startswith("D::Permission: ro-bind-try ") and ln.endswith(
        "/fim_portal.sh /tmp/.fim-portal/fim_portal") for ln in lines), lines


def test_nothing_of_the_portal_outlives_a_run(portal: Path, runner: Runner) -> None:
    proc = runner.popen([str(portal), "fim-exec", "sh", "-c", "fim_portal true; sleep 1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launcher = _launcher(proc, runner)
    assert _wait_for(lambda: _dispatcher(launcher) is not None)
    dispatcher = _dispatcher(launcher)
    assert proc.wait(timeout=60) == 0
    assert not _alive(dispatcher)  # type: ignore[arg-type]

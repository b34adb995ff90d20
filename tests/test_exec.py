"""fim-exec / fim-root end to end on a real image, as root and as an ordinary user."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import List

from conftest import Runner


def data_dir(image: Path) -> Path:
    return image.parent / f".{image.name}.data"


def test_exec_runs_as_calling_user(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec", "id", "-u"])
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, str(runner.uid), "")


def test_root_runs_as_uid_0(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-root", "id", "-u"])
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "0", "")


def test_root_can_write_files_the_layer_stores_as_root(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-root", "sh", "-c", "echo changed >> /etc/profile && id -u"])
    assert r.returncode == 0, r.stderr
    assert (data_dir(image) / "data/etc/profile").exists()


def test_exit_codes_pass_through(image: Path, runner: Runner) -> None:
    assert runner.run([str(image), "fim-exec", "sh", "-c", "exit 7"]).returncode == 7
    assert runner.run([str(image), "fim-root", "false"]).returncode == 1
    killed = runner.run([str(image), "fim-exec", "sh", "-c", "kill -9 $$"])
    assert killed.returncode == 137


def test_missing_program_exits_127(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec", "no-such-program"])
    assert r.returncode == 127
    r = runner.run([str(image), "fim-exec", "/etc/passwd"])
    assert r.returncode == 126


def test_usage_errors_exit_125(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec"])
    assert (r.returncode, r.stdout) == (125, "")
    assert r.stderr == "E::Incorrect number of arguments for fim-exec\n"
    r = runner.run([str(image), "fim-nonsense"])
    assert r.returncode == 125 and r.stderr.startswith("E::")


def test_stdin_and_stdout_pass_through(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec", "sh", "-c", "tr a-z A-Z; echo err >&2"],
                   input="hello\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "HELLO\n", "err\n")


def test_terminal_passes_through(image: Path, runner: Runner) -> None:
    # `script` gives the program a pseudo-terminal, as an interactive user would.
    cmd = f"{image} fim-exec sh -c 'test -t 0 && test -t 1 && echo is-a-tty'"
    r = runner.run(["script", "-qec", cmd, "/dev/null"])
    assert r.returncode == 0 and "is-a-tty" in r.stdout


def test_no_arguments_runs_a_shell(image: Path, runner: Runner) -> None:
    r = runner.run([str(image)], input="echo from-shell; exit 3\n")
    assert (r.returncode, r.stdout) == (3, "from-shell\n")
    r = runner.run([str(image), "-c", "echo $0"])
    assert r.stdout.strip() == "/bin/sh"


def test_writes_persist_in_the_data_dir(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo kept > /opt/note"])
    assert r.returncode == 0, r.stderr
    stored = data_dir(image) / "data/opt/note"
    assert stored.read_text() == "kept\n"
    assert stored.stat().st_uid == runner.uid
    r = runner.run([str(image), "fim-exec", "cat", "/opt/note"])
    assert r.stdout == "kept\n"


def test_deleted_base_file_stays_deleted(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-root", "rm", "/etc/hostname"])
    assert r.returncode == 0, r.stderr
    r = runner.run([str(image), "fim-exec", "sh", "-c", "test -e /etc/hostname; echo $?"])
    assert r.stdout.strip() == "1"
    r = runner.run([str(image), "fim-exec", "ls", "/etc"])
    assert "hostname" not in r.stdout.split()


def test_work_dir_is_removed_at_exit(image: Path, runner: Runner) -> None:
    assert runner.run([str(image), "fim-exec", "true"]).returncode == 0
    assert list((data_dir(image) / "work").iterdir()) == []


def _namespace_holders(marker: str) -> List[int]:
    """Processes whose mount table mentions `marker` (the instance's own namespace)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                if marker in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_two_instances_run_at_once(image: Path, runner: Runner) -> None:
    script = "echo one > /tmp/x; sleep 2; cat /tmp/x"
    first = runner.popen([str(image), "fim-exec", "sh", "-c", script],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = runner.run([str(image), "fim-exec", "sh", "-c", "echo two"])
    out, _ = first.communicate(timeout=30)
    assert (second.returncode, second.stdout) == (0, "two\n")
    assert (first.returncode, out) == (0, "one\n")


def test_no_mount_outlives_a_killed_launcher(image: Path, runner: Runner) -> None:
    proc = runner.popen([str(image), "fim-exec", "sleep", "60"])
    marker = "/app/"
    launcher = proc.pid
    # runuser forks: the launcher is its child when running as the test user.
    if runner.user is not None:
        assert _wait_for(lambda: bool(_children(proc.pid)))
        launcher = _children(proc.pid)[0]
    assert _wait_for(lambda: _holders_of(launcher, marker)), "instance never mounted"
    holders = _holders_of(launcher, marker)
    os.kill(launcher, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _wait_for(lambda: not any(p in _namespace_holders(marker) for p in holders)), \
        "processes holding the instance's mounts survived"


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _holders_of(launcher: int, marker: str) -> List[int]:
    """The launcher's descendants that see the instance's layer mounts."""
    seen, todo = [], [launcher]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += _children(pid)
    return [p for p in seen if p in _namespace_holders(marker)]


def test_debug_lines(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-exec", "true"], env={"FIM_DEBUG": "1"})
    lines = r.stdout.splitlines()
    assert "D::Overlay type: BWRAP" in lines
    mounting = [ln for ln in lines if ln.startswith("D::Mounting layer from ")]
    assert len(mounting) == 1 and f"'{image}'" in mounting[0]
    assert any(ln.startswith("I::Overlay layer '") and ln.endswith("/layers/0'") for ln in lines)


# A helper left behind that saves its state when told to end, as wineserver does.
HELPER = ("(trap 'sleep 0.3; echo saved > /opt/state; exit 0' TERM;"
          " while :; do sleep 0.1; done) & sleep 0.3; exit 3")


def test_helpers_save_their_state_at_exit(image: Path, runner: Runner) -> None:
    started = time.monotonic()
    r = runner.run([str(image), "fim-exec", "sh", "-c", HELPER])
    took = time.monotonic() - started
    assert r.returncode == 3, r.stderr
    assert took < 4, took  # it ended when told to, well before the grace period's end
    r = runner.run([str(image), "fim-exec", "cat", "/opt/state"])
    assert r.stdout == "saved\n", r.stderr


def test_a_helper_that_ignores_sigterm_gets_the_grace_period(image: Path,
                                                              runner: Runner) -> None:
    script = "trap '' TERM; sleep 100 & exit 0"
    started = time.monotonic()
    r = runner.run([str(image), "fim-exec", "sh", "-c", script], env={"FIM_EXIT_GRACE": "1"})
    took = time.monotonic() - started
    assert r.returncode == 0 and 1 <= took < 4, (r.stderr, took)
    # Nothing left behind costs nothing: no wait at all.
    started = time.monotonic()
    assert runner.run([str(image), "fim-exec", "true"]).returncode == 0
    assert time.monotonic() - started < 1
    bad = runner.run([str(image), "fim-exec", "true"], env={"FIM_EXIT_GRACE": "soon"})
    assert bad.returncode == 125 and bad.stderr.startswith("E::FIM_EXIT_GRACE"), bad.stderr


def test_sigterm_reaches_the_program_which_ends_cleanly(image: Path, runner: Runner) -> None:
    script = "trap 'echo cleaned > /opt/term; exit 7' TERM; while :; do sleep 0.1; done"
    proc = runner.popen([str(image), "fim-exec", "sh", "-c", script])
    launcher = proc.pid
    if runner.user is not None:
        assert _wait_for(lambda: bool(_children(proc.pid)))
        launcher = _children(proc.pid)[0]
    assert _wait_for(lambda: bool(_holders_of(launcher, "/app/")))
    time.sleep(0.5)
    os.kill(launcher, signal.SIGTERM)
    assert proc.wait(timeout=30) == 7
    r = runner.run([str(image), "fim-exec", "cat", "/opt/term"])
    assert r.stdout == "cleaned\n", r.stderr


def test_the_program_gets_default_signal_dispositions(image: Path, runner: Runner) -> None:
    """Python ignores SIGPIPE and SIGXFSZ and the runtime SIGINT and SIGQUIT; none of
    that may reach the program: `yes | head -1` ends quietly, nothing is ignored."""
    r = runner.run([str(image), "fim-exec", "sh", "-c", "yes | head -1"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "y\n", "")
    r = runner.run([str(image), "fim-exec", "grep", "SigIgn", "/proc/self/status"])
    ignored = int(r.stdout.split()[1], 16)
    for signum in (2, 3, 13, 25):  # SIGINT, SIGQUIT, SIGPIPE, SIGXFSZ
        assert not ignored & (1 << (signum - 1)), (signum, r.stdout)

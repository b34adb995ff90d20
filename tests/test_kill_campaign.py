"""kill -9 at random instants on every write path: a commit, an add, settings writes,
two first runs of a build extracting its runtime at once, a keeper starting. After
each kill: the image boots, no file of the upper directory is lost, no mount and no
daemon is left, and the next start removes what the dead instance left.

The default sizes keep the suite short; FIM_KILL_RUNS=100 runs the campaign the
hardening notes quote (docs/hardening.md). The seed is fixed: a failure replays.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Sequence

import pytest
from conftest import Runner, traces

RUNS = int(os.environ.get("FIM_KILL_RUNS", "0"))


def runs(default: int) -> int:
    return RUNS or default


def killed_at(runner: Runner, argv: Sequence[str], delay: float, env: dict) -> int:
    """Start `argv` as the runner, SIGKILL its launcher `delay` seconds later; its exit."""
    full = {**os.environ, "FIM_KEEP": "0", **env}
    full.pop("FIM_DEBUG", None)
    # The shell prints its pid and becomes the launcher (launcher.sh execs python).
    proc = runner.popen(["sh", "-c", 'echo $$; exec "$@"', "sh", *argv], env=full,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.stdout.close()
    return proc.wait(timeout=60)


def duration(runner: Runner, argv: Sequence[str], env: dict) -> float:
    start = time.monotonic()
    r = runner.run(list(argv), env={"FIM_KEEP": "0", **env})
    assert r.returncode == 0, r.stderr
    return time.monotonic() - start


def no_traces(image: Path, seconds: float = 20) -> None:
    """Nothing of the image left running or mounted (the dead launcher's daemons end
    with its namespaces; give them a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        left = traces(image)
        if not left:
            return
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.2)


def run_ok(runner: Runner, image: Path, *argv: str) -> str:
    r = runner.run([str(image), *argv], env={"FIM_KEEP": "0"})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Internal error" not in r.stderr, r.stderr
    return r.stdout


def campaign(n: int, seed: int, longest: float, step: Callable[[int, float], int]) -> None:
    """`n` steps, each killing at a random instant within `longest`; most of them must
    land before the command ended, or the campaign tested nothing."""
    rng = random.Random(seed)
    killed = sum(step(i, rng.uniform(0, longest)) != 0 for i in range(n))
    assert killed >= n // 3, f"only {killed} of {n} runs were killed before they ended"


def test_commit_killed(image: Path, runner: Runner) -> None:
    """Each round writes one more file, then commits it and is killed: every file
    written survives (in the upper directory or in a layer)."""
    def write(i: int) -> None:
        run_ok(runner, image, "fim-exec", "sh", "-c", f"echo {i} > /opt/kill-{i}")

    write(-1)
    longest = 1.2 * duration(runner, [str(image), "fim-layer", "commit", "binary"], {})

    def step(i: int, delay: float) -> None:
        write(i)
        code = killed_at(runner, [str(image), "fim-layer", "commit", "binary"], delay, {})
        no_traces(image)
        names = run_ok(runner, image, "fim-exec", "sh", "-c", "cat /opt/kill-*").split()
        assert sorted(names, key=int) == [str(k) for k in range(-1, i + 1)], (i, delay)
        return code

    campaign(runs(8), 13, longest, step)
    # What killed commits left in the data dir's tmp/ went with the next start's end.
    tmp = image.parent / f".{image.name}.data" / "tmp"
    assert sorted(p.name for p in tmp.glob("*.partial")) == [] if tmp.exists() else True


def test_add_killed(image: Path, runner: Runner, workdir: Path) -> None:
    layer = workdir / "extra.layer"
    source = workdir / "extra"
    (source / "opt").mkdir(parents=True)
    (source / "opt" / "added").write_text("added\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(source)], check=True)
    r = runner.run([str(image), "fim-layer", "create", str(source), str(layer)])
    assert r.returncode == 0, r.stderr
    longest = duration(runner, [str(image), "fim-layer", "add", str(layer)], {})
    size = image.stat().st_size

    def step(i: int, delay: float) -> None:
        code = killed_at(runner, [str(image), "fim-layer", "add", str(layer)], delay, {})
        no_traces(image)
        assert run_ok(runner, image, "fim-exec", "cat", "/opt/added") == "added\n"
        assert image.stat().st_size >= size
        return code

    campaign(runs(10), 17, longest, step)


def test_settings_writes_killed(image: Path, runner: Runner) -> None:
    """fim-env add (a 1 MiB region through the journal) and fim-boot set: after a kill
    the value read is the old one or the new one, never anything else."""
    # The first start extracts the runtime: a measure of it would put most kills
    # after the writes they should interrupt.
    run_ok(runner, image, "fim-env", "list")
    longest = 1.2 * duration(runner, [str(image), "fim-env", "add", "V=0"], {})
    seen: List[str] = []


    def step(i: int, delay: float) -> None:
        before = run_ok(runner, image, "fim-env", "list").split()
        code = killed_at(runner, [str(image), "fim-env", "add", f"V={i + 1}"], delay, {})
        after = run_ok(runner, image, "fim-env", "list").split()
        assert after in (before, [f"V={i + 1}"]), (i, delay, before, after)
        seen.append("new" if after != before else "old")
        old_boot = run_ok(runner, image, "fim-boot", "show")
        killed_at(runner, [str(image), "fim-boot", "set", "echo", str(i)], delay / 2, {})
        boot = run_ok(runner, image, "fim-boot", "show")
        new_boot = f'{{\n  "args": [\n    "{i}"\n  ],\n  "program": "echo"\n}}\n'
        assert boot in (old_boot, new_boot), boot
        run_ok(runner, image, "fim-exec", "true")
        return code

    campaign(runs(30), 19, longest, step)
    assert "old" in seen or "new" in seen


def test_first_runs_extracting_killed(image: Path, runner: Runner) -> None:
    """Two first runs of a build at once, one of them killed while it extracts: the
    other and the next run work, and no partial runtime stays behind."""
    app = Path(run_ok(runner, image, "fim-exec", "sh", "-c", "echo $FIM_DIR_APP").strip())
    runtime = app / "runtime"

    def fresh() -> None:
        subprocess.run(["rm", "-rf", str(runtime)], check=True)

    fresh()
    longest = 1.2 * duration(runner, [str(image), "fim-exec", "true"], {})

    def step(i: int, delay: float) -> None:
        fresh()
        other = runner.popen([str(image), "fim-exec", "cat", "/opt/base/keep"],
                             env={**os.environ, "FIM_KEEP": "0"}, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        code = killed_at(runner, [str(image), "fim-exec", "true"], delay, {})
        out, err = other.communicate(timeout=60)
        assert (other.returncode, out) == (0, "keep\n"), err
        no_traces(image)
        assert run_ok(runner, image, "fim-exec", "cat", "/opt/base/keep") == "keep\n"
        return code

    campaign(runs(10), 23, longest, step)
    assert sorted(p.name for p in app.iterdir() if p.name.startswith("runtime")) \
        == ["runtime"]


def test_keeper_killed_while_it_starts(image: Path, runner: Runner) -> None:
    """A launch that starts a keeper, the keeper (and then the launch) killed at random
    instants: nothing is left, and the next launch (with a keeper again) works."""
    longest = 1.2 * duration(runner, [str(image), "fim-exec", "true"], {"FIM_KEEP": "5"})

    def keepers() -> List[int]:
        from conftest import keeper_processes

        return keeper_processes()

    def step(i: int, delay: float) -> None:
        before = set(keepers())
        env = {**os.environ, "FIM_KEEP": "30"}
        proc = runner.popen([str(image), "fim-exec", "sleep", "1"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        time.sleep(delay)
        hit = 0
        for pid in set(keepers()) - before:
            try:
                os.kill(pid, signal.SIGKILL)
                hit = 1
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
        r = runner.run([str(image), "fim-exec", "cat", "/opt/base/keep"],
                       env={"FIM_KEEP": "30"})
        assert (r.returncode, r.stdout) == (0, "keep\n"), r.stderr
        for pid in set(keepers()) - before:
            os.kill(pid, signal.SIGKILL)
        no_traces(image)
        return hit

    campaign(runs(10), 29, longest, step)


@pytest.fixture(autouse=True)
def _nothing_left(image: Path) -> object:
    yield None
    no_traces(image)

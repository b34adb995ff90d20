"""Simultaneous starts of one image: on a fresh data directory, with a fresh cache of
marker branches, just after a backend switch; and the one real conflict (a backend
that needs another form of the upper directory while an instance runs). Root and
rootless."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from conftest import Runner

STARTS = 50


def _all_at_once(runner: Runner, image: Path, backend: str) -> list:
    """STARTS instances of `backend` released together (each waits on a FIFO until the
    test closes it): (exit code, stdout, stderr) each."""
    gate = image.parent / "gate"
    os.mkfifo(gate, 0o666)
    os.chmod(gate, 0o666)
    env = {**_base_env(), "FIM_OVERLAY": backend, "FIM_KEEP": "0"}
    procs = [runner.popen(["sh", "-c", f'read x < {gate}; exec "$0" "$@"', str(image),
                           "fim-exec", "sh", "-c", f"echo {n} > /tmp/n; cat /opt/base/keep /tmp/n"],
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
             for n in range(STARTS)]
    time.sleep(1)  # all waiting on the gate
    os.close(os.open(gate, os.O_WRONLY))  # every reader sees its end at once
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    os.unlink(gate)
    return results


def _base_env() -> dict:
    env = dict(os.environ)
    env.pop("FIM_DEBUG", None)
    return env


def _check(results: list, backend: str) -> None:
    bad = [(n, code, err) for n, (code, out, err) in enumerate(results)
           if code != 0 or err or out.split() != ["keep", str(n)]]
    assert bad == [], f"{backend}: {len(bad)} of {STARTS} failed, first: {bad[:3]}"


def test_fifty_simultaneous_starts(image: Path, runner: Runner) -> None:
    data = image.parent / f".{image.name}.data"
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo $FIM_DIR_APP"],
                   env={"FIM_KEEP": "0"})
    assert r.returncode == 0, r.stderr
    markers = Path(r.stdout.strip()) / "markers"
    shutil.rmtree(data)  # the fresh data directory of a first start
    # The fresh data dir; then each switch converts it once while the others wait.
    for backend in ("bwrap", "unionfs", "overlayfs", "bwrap", "unionfs"):
        if backend == "unionfs":
            shutil.rmtree(markers, ignore_errors=True)  # all build the cache at once
        _check(_all_at_once(runner, image, backend), backend)
    assert (data / "overlay.state").read_text().strip() == "unionfs"


def test_a_real_conflict_names_both_overlays(image: Path, runner: Runner) -> None:
    holder = runner.popen([str(image), "fim-exec", "sh", "-c", "echo up; sleep 30"],
                          env={**_base_env(), "FIM_OVERLAY": "overlayfs", "FIM_KEEP": "0"},
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        r = runner.run([str(image), "fim-exec", "true"],
                       env={"FIM_OVERLAY": "unionfs", "FIM_KEEP": "0"})
        assert r.returncode == 125
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("E::"), r.stderr
        assert "running instance with the OVERLAYFS overlay" in r.stderr
        assert "this run needs the UNIONFS overlay" in r.stderr
        # Another instance of the same overlay shares the directory.
        r = runner.run([str(image), "fim-exec", "cat", "/opt/base/keep"],
                       env={"FIM_OVERLAY": "overlayfs", "FIM_KEEP": "0"})
        assert (r.returncode, r.stdout, r.stderr) == (0, "keep\n", "")
    finally:
        holder.terminate()
        holder.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = runner.run([str(image), "fim-exec", "true"],
                       env={"FIM_OVERLAY": "unionfs", "FIM_KEEP": "0"})
        if r.returncode == 0:
            break
        time.sleep(0.2)
    assert (r.returncode, r.stderr) == (0, "")

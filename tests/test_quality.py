"""The runtime must run on Python 3.9; the code stays lint-clean (the import lines are
checked in unit/test_boundaries.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "src/fim/runtime"


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)


def test_runtime_needs_at_most_python_3_9() -> None:
    vermin = str(Path(sys.executable).parent / "vermin")
    r = subprocess.run([vermin, "--no-tips", "--eval-annotations", "--backport", "typing",
                        str(RUNTIME)], capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("Minimum required versions:")]
    assert line, r.stdout + r.stderr
    required = line[0].split(":", 1)[1].strip().split(", ")[-1]
    assert tuple(int(x) for x in required.split(".")) <= (3, 9), line[0]


def test_ruff_is_clean() -> None:
    r = _tool("ruff", "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean() -> None:
    r = _tool("mypy")
    assert r.returncode == 0, r.stdout + r.stderr

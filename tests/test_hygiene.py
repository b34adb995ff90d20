"""The suite cleans up after a test that fails: a session of this suite's own fixtures,
run in a subprocess, whose one test starts two UNIONFS instances (each a FUSE daemon
and its mount) and fails while they run, ends with none of them left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import traces

FAILING = '''
import subprocess, os
from pathlib import Path

def test_fails_with_daemons_running(image, runner):
    Path(os.environ["FIM_HYGIENE_IMAGE"]).write_text(str(image))
    for overlay in ("unionfs", "unionfs"):
        proc = runner.popen([str(image), "fim-exec", "sh", "-c", "echo up; sleep 600"],
                            env={**os.environ, "FIM_OVERLAY": overlay},
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout.readline() == b"up\\n"
    assert False, "fails on purpose with two instances running"
'''


def test_a_failing_test_leaves_no_daemon_and_no_mount(tmp_path: Path) -> None:
    here = Path(__file__).parent
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy2(here / "conftest.py", suite / "conftest.py")
    (suite / "test_fails.py").write_text(FAILING)
    told = tmp_path / "image-path"
    env = {**os.environ, "FIM_HYGIENE_IMAGE": str(told),
           "PYTHONPATH": os.pathsep.join([str(here.parent / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "base"), "-k", "root", "--tb=short",
                        str(suite / "test_fails.py")],
                       cwd=suite, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout + r.stderr
    assert "fails on purpose with two instances running" in r.stdout, r.stdout
    image = Path(told.read_text())
    deadline = time.monotonic() + 10
    while traces(image) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert traces(image) == []
    assert not image.parent.exists()  # the workdir went too

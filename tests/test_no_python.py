"""Hosts without python3 and without fusermount3: a Debian minbase (no python3, no
fuse3 package; only the kernel's /dev/fuse) entered as the host root, where an image
runs on its embedded interpreter and mounts FUSE inside its own namespaces: every
backend, casefold, a commit; root and an ordinary user. Also: a host python3 older
than 3.9 hands over to the embedded interpreter; an image built without one says
what is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Runner, cached_rootfs, fim

pytestmark = pytest.mark.slow

SCENARIO = """set -e
cd /work
# The keeper outlives the last run by FIM_KEEP seconds (60 by default), and this
# host, a pid namespace of its own, ends only when its last process has.
export FIM_KEEP=2
for o in bwrap overlayfs unionfs; do
  FIM_OVERLAY=$o ./app.flatimage fim-exec sh -c "echo $o > /opt/$o; cat /opt/$o"
done
./app.flatimage fim-casefold on
./app.flatimage fim-exec cat /OPT/BASE/KEEP
./app.flatimage fim-casefold off
./app.flatimage fim-root sh -c 'echo kept > /opt/committed'
./app.flatimage fim-layer commit binary >/dev/null
rm -rf .app.flatimage.data
./app.flatimage fim-exec cat /opt/committed /opt/bwrap /opt/unionfs
# SIGKILL of a launcher on the embedded interpreter: nothing of it stays.
./app.flatimage fim-exec sleep 60 &
sleep 3
kill -9 $!
sleep 2
for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done |
  grep -c '[s]leep 60' || true
./app.flatimage fim-version deps
"""


@pytest.fixture(scope="session")
def bare_root() -> Path:
    """Debian bookworm minbase: no python3, no fuse3."""
    return cached_rootfs("debian-bookworm-minbase", "")


def _enter(bwrap: str, root: Path, workdir: Path, script: str) -> list:
    # bubblewrap turns the Debian tree into the host root; only /dev and /work come in.
    return [bwrap, "--bind", str(root), "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--bind", str(workdir), "/work", "--unshare-pid",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work",
            "--", "/bin/sh", "-c", script]


def test_embedded_interpreter_and_no_fusermount(built_image: Path, bare_root: Path,
                                                runner: Runner, workdir: Path) -> None:
    from test_portability import _bwrap_copy

    for absent in ("usr/bin/python3", "usr/bin/fusermount3", "usr/bin/fusermount",
                   "bin/fusermount3"):
        assert not (bare_root / absent).exists(), absent
    shutil.copy2(built_image, workdir / "app.flatimage")
    (workdir / "scenario.sh").write_text(SCENARIO)
    bwrap = _bwrap_copy(workdir)
    subprocess.run(["chown", "-R", str(runner.uid), str(workdir)], check=True)
    r = runner.run(_enter(bwrap, bare_root, workdir, "sh /work/scenario.sh"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["bwrap", "overlayfs", "unionfs", "keep"], r.stdout
    assert lines[4:8] == ["kept", "bwrap", "unionfs", "0"], r.stdout
    deps = r.stdout[r.stdout.index("{"):]
    import json

    python = json.loads(deps)["python3"]
    assert python["copy"] == "embedded" and python["version"].startswith("Python 3."), python


def test_an_old_host_python_hands_over(built_image: Path, runner: Runner,
                                       workdir: Path) -> None:
    """A python3 that reports 3.8 (a wrapper around this one) sends the launcher to the
    image's own interpreter; a build without one names what is missing."""
    shutil.copy2(built_image, workdir / "app.flatimage")
    old = workdir / "python3.8"
    old.write_text("#!/bin/sh\n# -I -S -c CODE IMAGE ARGS: the bootstrap, told it runs on 3.8\n"
                   "shift 3\n"
                   "exec /usr/bin/python3 -I -S -c 'import sys; sys.version_info = (3, 8, 0);"
                   " exec(sys.argv.pop(1))' \"$@\"\n")
    old.chmod(0o755)
    subprocess.run(["chown", "-R", str(runner.uid), str(workdir)], check=True)
    r = runner.run([str(workdir / "app.flatimage"), "fim-version", "deps"],
                   env={"FIM_PYTHON": str(old)})
    assert r.returncode == 0, r.stderr
    assert '"copy": "embedded"' in r.stdout.split('"python3"')[1]
    bare = workdir / "bare.flatimage"
    r = fim("build", "--python", "none", str(built_image.parent / "rootfs"), str(bare))
    assert r.returncode == 0, r.stderr
    subprocess.run(["chown", str(runner.uid), str(bare)], check=True)
    r = runner.run([str(bare), "fim-exec", "true"], env={"FIM_PYTHON": str(old)})
    assert (r.returncode, r.stderr) == (
        125, "E::python3 (3.9 or newer) is required to run this image; install it\n")
    assert bare.stat().st_size < (workdir / "app.flatimage").stat().st_size - 4_000_000

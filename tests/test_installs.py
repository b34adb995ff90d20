"""Package installs that change ownership (slow: they need the Debian archive).

man-db's files belong to `man`, fontconfig's scripts give /usr/local/share/fonts
to `staff`: as root (the host's ids), as an ordinary user with subordinate ids
(kept in the committed layer), and without (the change succeeds without effect,
the files stay root's) the install finishes, dpkg has nothing left half-done,
and the programs work after the commit with the data directory gone.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import Runner, cached_rootfs, ensure_subordinate_ids, fim

pytestmark = pytest.mark.slow

SCRIPT = """set -e
./a.flatimage fim-perms add network
./a.flatimage fim-root apt-get update -q >/dev/null
./a.flatimage fim-root apt-get install -y -q --no-install-recommends man-db fontconfig >/dev/null
./a.flatimage fim-root dpkg --audit
echo owners: $(./a.flatimage fim-root stat -c %U:%G /var/cache/man /usr/local/share/fonts)
./a.flatimage fim-layer commit binary >/dev/null
rm -rf .a.flatimage.data
echo committed: $(./a.flatimage fim-root stat -c %U:%G /var/cache/man /usr/local/share/fonts)
echo fonts: $(./a.flatimage fim-exec fc-list : family | head -n 1)
./a.flatimage fim-exec man -w dpkg
"""

KEPT = "man:man root:staff"
CASES = {
    "root": ("root", {}, KEPT),
    "user-subordinate-ids": ("user", {}, KEPT),
    "user-single-id": ("user", {"FIM_SUBIDS": "0"}, "root:root root:root"),
}


@pytest.fixture(scope="module")
def minbase_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = cached_rootfs("debian-bookworm-python3-fuse3", "python3,fuse3")
    out = tmp_path_factory.mktemp("minbase") / "a.flatimage"
    r = fim("build", str(root), str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_install_that_changes_ownership(case: str, minbase_image: Path,
                                        unprivileged: Runner) -> None:
    who, env, owners = CASES[case]
    runner = Runner("root", None, 0) if who == "root" else unprivileged
    if case == "user-subordinate-ids" and not ensure_subordinate_ids():
        pytest.skip("the test user has no subordinate ids and none can be given")
    work = Path(tempfile.mkdtemp(prefix="fim-install-"))  # reachable by the test user
    try:
        shutil.copy2(minbase_image, work / "a.flatimage")
        subprocess.run(["chown", "-R", str(runner.uid), str(work)], check=True)
        r = runner.run(["sh", "-ec", SCRIPT], env=env, cwd=work, timeout=900)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert f"owners: {owners}" in lines
    assert f"committed: {owners}" in lines
    assert any(line.startswith("fonts: DejaVu") for line in lines), lines
    assert lines[-1].startswith("/usr/share/man/man1/dpkg.1")

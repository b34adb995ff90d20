"""Wine, the casefold case end to end (outside the default run: ~8 minutes with a
1 GB image; `./scripts/test.sh -m wine tests/test_wine.py`).

The README's Wine recipe: an image with Debian's Wine, casefold on, one prefix
inside the image (WINEPREFIX with fim-env), made by `wineboot` under each FUSE
backend (its registry must be written at exit: wineserver gets the exit grace),
committed, then used as another user in another directory: `cmd /c echo` and a
file read through a spelling of another case.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import TEST_USER, Runner, cached_rootfs, fim

pytestmark = [pytest.mark.slow, pytest.mark.wine]

RECIPE = """set -e
./wine.flatimage fim-casefold on
./wine.flatimage fim-env add 'WINEPREFIX=/opt/wine' 'WINEDEBUG=-all'
FIM_OVERLAY={backend} ./wine.flatimage fim-exec wine wineboot -i
./wine.flatimage fim-exec ls /opt/wine
./wine.flatimage fim-layer commit binary >/dev/null
./wine.flatimage fim-boot set wine
"""


@pytest.fixture(scope="module")
def wine_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = cached_rootfs("debian-bookworm-wine", "wine,wine64")
    out = tmp_path_factory.mktemp("wine") / "wine.flatimage"
    r = fim("build", str(root), str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("backend", ["unionfs", "overlayfs"])
def test_one_prefix_for_every_user(wine_image: Path, backend: str,
                                   unprivileged: Runner) -> None:
    work = Path(tempfile.mkdtemp(prefix="fim-wine-"))
    other = Path(tempfile.mkdtemp(prefix=f"fim-wine-{TEST_USER}-"))
    try:
        shutil.copy2(wine_image, work / "wine.flatimage")
        r = subprocess.run(["sh", "-ec", RECIPE.format(backend=backend)], cwd=work,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        # The registry was written at exit, not lost with wineserver.
        listing = r.stdout.split()
        assert "system.reg" in listing and "user.reg" in listing, r.stdout
        shutil.copy2(work / "wine.flatimage", other / "wine.flatimage")
        subprocess.run(["chown", "-R", TEST_USER, str(other)], check=True)
        env = {"HOME": str(other), "FIM_OVERLAY": backend}
        image = str(other / "wine.flatimage")
        r = unprivileged.run([image, "cmd", "/c", "echo", "hello"], env=env, timeout=300)
        assert (r.returncode, r.stdout.strip()) == (0, "hello"), r.stderr
        r = unprivileged.run([image, "fim-exec", "sh", "-c",
                              "echo kept > /opt/wine/drive_c/users/Public/MiXeD.TxT"], env=env)
        assert r.returncode == 0, r.stderr
        r = unprivileged.run([image, "cmd", "/c", "type", r"C:\users\PUBLIC\mixed.TXT"],
                             env=env, timeout=300)
        assert r.stdout.strip() == "kept", r.stdout + r.stderr
        # The prefix is the image's: the other user's data dir holds only its changes.
        used = sum(f.stat().st_size for f in (other / ".wine.flatimage.data").rglob("*")
                   if f.is_file() and not f.is_symlink())
        assert used < 20 * 1024 * 1024, used
    finally:
        subprocess.run(["rm", "-rf", str(work), str(other)], check=False)

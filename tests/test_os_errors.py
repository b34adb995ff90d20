"""OS errors on the paths users' data takes reach the user as one E:: line naming the
path and the cause, and change nothing: settings writes on a read-only image, a
full disk under a sparse copy, a data directory that cannot be made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest
from conftest import Runner


def one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("E::"), r.stderr
    assert "Internal error" not in r.stderr and "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def mounted(workdir: Path) -> Iterator[List[Path]]:
    made: List[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _require_root() -> None:
    if os.getuid() != 0:
        pytest.skip("mounts a file system: needs root")


def test_read_only_medium(image: Path, runner: Runner, workdir: Path,
                          mounted: List[Path]) -> None:
    """An image on read-only media: its settings cannot be changed (one line), and it
    runs with a data directory of the user's own."""
    _require_root()
    before = runner.run([str(image), "fim-env", "list"]).stdout
    share = workdir / "share"
    share.mkdir()
    os.chown(share, runner.uid, -1)
    subprocess.run(["mount", "--bind", str(workdir), str(workdir)], check=True)
    mounted.append(workdir)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(workdir)], check=True)
    line = one_error(runner.run([str(image), "fim-env", "add", "A=1"]))
    assert str(image) in line and "Read-only file system" in line
    line = one_error(runner.run([str(image), "fim-layer", "commit", "binary"]))
    assert "Read-only file system" in line
    assert runner.run([str(image), "fim-env", "list"]).stdout == before
    # The user's own data directory, elsewhere: here a writable tmpfs over `share`.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(share)], check=True)
    mounted.append(share)
    os.chown(share, runner.uid, -1)
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo kept > /opt/new; cat /opt/new"],
                   env={"XDG_DATA_HOME": str(share), "FIM_KEEP": "0"})
    assert (r.returncode, r.stdout, r.stderr) == (0, "kept\n", "")
    [data] = list((share / "fim").iterdir())
    assert data.name.startswith("app.flatimage-") and (data / "data/opt/new").exists()


def test_a_directory_the_user_cannot_write(built_image: Path, unprivileged: Runner,
                                           tmp_path: Path) -> None:
    """Root installs the image where the user may read but not write (/opt/...): the
    user runs it with a data directory of their own; its settings refuse, one line."""
    if os.getuid() != 0:
        pytest.skip("hands the file to another user: needs root")
    place = Path(f"/tmp/fim-test-ro-{os.getpid()}")
    place.mkdir(mode=0o755)
    share = Path(f"/tmp/fim-test-share-{os.getpid()}")
    share.mkdir(mode=0o755)
    os.chown(share, unprivileged.uid, -1)
    try:
        image = place / "app.flatimage"
        image.write_bytes(built_image.read_bytes())
        image.chmod(0o755)
        line = one_error(unprivileged.run([str(image), "fim-perms", "add", "network"]))
        assert str(image) in line and "Permission denied" in line
        env = {"XDG_DATA_HOME": str(share), "FIM_KEEP": "0"}
        r = unprivileged.run([str(image), "fim-exec", "sh", "-c", "echo 1 > /opt/x; cat /opt/x"],
                             env=env)
        assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")
        r = unprivileged.run([str(image), "fim-exec", "cat", "/opt/x"],
                             env={**env, "FIM_DEBUG": "1"})
        assert r.returncode == 0 and r.stdout.endswith("1\n")
        [data] = list((share / "fim").iterdir())
        assert f"D::Data directory: {data} ('{place}/.app.flatimage.data' is not writable)" \
            in r.stdout.splitlines()
        assert sorted(os.listdir(place)) == ["app.flatimage"]
    finally:
        subprocess.run(["rm", "-rf", str(place), str(share)], check=True)


def test_fim_dir_data(image: Path, runner: Runner, workdir: Path) -> None:
    """FIM_DIR_DATA holds the writable layer, the managed layers and the state."""
    elsewhere = workdir / "elsewhere" / "data"
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo 2 > /opt/y"],
                   env={"FIM_DIR_DATA": str(elsewhere), "FIM_KEEP": "0"})
    assert (r.returncode, r.stderr) == (0, "")
    assert (elsewhere / "data/opt/y").read_text() == "2\n"
    assert (elsewhere / "overlay.state").exists()
    assert not (workdir / f".{image.name}.data" / "data/opt/y").exists()
    r = runner.run([str(image), "fim-layer", "commit", "layer"],
                   env={"FIM_DIR_DATA": str(elsewhere)})
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (elsewhere / "layers").iterdir()] == ["layer-000.layer"]
    r = runner.run([str(image), "fim-exec", "cat", "/opt/y"],
                   env={"FIM_DIR_DATA": str(elsewhere), "FIM_KEEP": "0"})
    assert (r.returncode, r.stdout) == (0, "2\n")
    r = runner.run([str(image), "fim-exec", "cat", "/opt/y"], env={"FIM_KEEP": "0"})
    assert r.returncode != 0


def test_full_disk_under_a_sparse_copy(image: Path, runner: Runner, workdir: Path,
                                       mounted: List[Path]) -> None:
    """A sparse copy of the image on a full file system: a settings write needs blocks
    it cannot get; the old value stands and the image still runs."""
    _require_root()
    small = workdir / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    mounted.append(small)
    os.chown(small, runner.uid, -1)
    target = small / "app.flatimage"
    subprocess.run(["cp", "--sparse=always", str(image), str(target)], check=True)
    os.chown(target, runner.uid, -1)
    r = runner.run([str(target), "fim-boot", "set", "echo", "kept"])
    assert r.returncode == 0, r.stderr
    # Fill what is left: the environment region (1 MiB, written whole through the
    # journal) needs pages that a sparse copy has not allocated yet.
    subprocess.run(["dd", "if=/dev/zero", f"of={small}/fill", "bs=64k"],
                   capture_output=True, check=False)
    line = one_error(runner.run([str(target), "fim-env", "add", "A=1"]))
    assert "No space left on device" in line and str(target) in line
    assert "old value stands" in line
    r = runner.run([str(target), "fim-env", "list"])
    assert (r.returncode, r.stdout) == (0, "")
    os.unlink(small / "fill")
    r = runner.run([str(target)], env={"FIM_KEEP": "0"})
    assert (r.returncode, r.stdout, r.stderr) == (0, "kept\n", "")

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
    """An image on read-only media: its settings cannot be changed and its data directory
    cannot be made; each says so on one line."""
    _require_root()
    before = runner.run([str(image), "fim-env", "list"]).stdout
    subprocess.run(["mount", "--bind", str(workdir), str(workdir)], check=True)
    mounted.append(workdir)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(workdir)], check=True)
    line = one_error(runner.run([str(image), "fim-env", "add", "A=1"]))
    assert str(image) in line and "Read-only file system" in line
    line = one_error(runner.run([str(image), "fim-exec", "true"]))
    assert f".{image.name}.data" in line and "Read-only file system" in line
    line = one_error(runner.run([str(image), "fim-layer", "commit", "binary"]))
    assert "Read-only file system" in line
    assert runner.run([str(image), "fim-env", "list"]).stdout == before


def test_a_directory_the_user_cannot_write(built_image: Path, unprivileged: Runner,
                                           tmp_path: Path) -> None:
    """Root installs the image where the user may read but not write (/opt/...)."""
    if os.getuid() != 0:
        pytest.skip("hands the file to another user: needs root")
    place = Path(f"/tmp/fim-test-ro-{os.getpid()}")
    place.mkdir(mode=0o755)
    try:
        image = place / "app.flatimage"
        image.write_bytes(built_image.read_bytes())
        image.chmod(0o755)
        line = one_error(unprivileged.run([str(image), "fim-perms", "add", "network"]))
        assert str(image) in line and "Permission denied" in line
        line = one_error(unprivileged.run([str(image), "fim-exec", "true"]))
        assert str(place / ".app.flatimage.data") in line and "Permission denied" in line
        assert sorted(os.listdir(place)) == ["app.flatimage"]
    finally:
        subprocess.run(["rm", "-rf", str(place)], check=True)


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

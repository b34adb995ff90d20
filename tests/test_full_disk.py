"""A full disk while a layer is written or appended: one E:: line naming the path and
the cause, the image byte for byte as it was, the upper directory untouched, no
partial file anywhere, and the next run without `W::Ignoring an incomplete last
layer`. On a real small filesystem: a tmpfs of a few megabytes, filled."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from conftest import Runner, reap

MIB = 1 << 20
BIG = 1_500_000  # incompressible bytes in the upper dir: the layer is about this size


def fim(runner: Runner, image: Path, *args: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *args])


def one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("E::"), r.stderr
    assert "Internal error" not in r.stderr and "Traceback" not in r.stderr
    return lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> Dict[str, str]:
    """Every file under `root` and the digest of its bytes."""
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def small(workdir: Path, runner: Runner) -> Iterator[List[Path]]:
    """Small tmpfs mounts the runner owns (made by root: an ordinary user cannot mount
    one the runtime's own processes would also see)."""
    if os.getuid() != 0:
        pytest.skip("mounts a tmpfs: needs root")
    made: List[Path] = []
    yield made
    reap(workdir)
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], check=False)


def mount(small: List[Path], workdir: Path, runner: Runner, name: str, size: str) -> Path:
    point = workdir / name
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(point)], check=True)
    small.append(point)
    os.chown(point, runner.uid, -1)
    return point


def place_image(built_image: Path, where: Path, runner: Runner) -> Path:
    image = where / "app.flatimage"
    # Sparse, as a download or a copy keeps it: the reserved space is mostly holes.
    subprocess.run(["cp", "--sparse=always", str(built_image), str(image)], check=True)
    os.chown(image, runner.uid, -1)
    return image


def fill(where: Path, leave: int) -> Path:
    """Fill the filesystem of `where` until `leave` bytes are free."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    assert free > leave, f"only {free} bytes free"
    filler = where / "filler"
    with open(filler, "wb") as f:
        left = free - leave
        while left > 0:
            step = min(left, MIB)
            f.write(b"\1" * step)
            left -= step
    return filler


def upper(image: Path) -> Path:
    return image.parent / f".{image.name}.data/data"


def changes(runner: Runner, image: Path) -> Dict[str, str]:
    r = fim(runner, image, "fim-root", "sh", "-c",
            f"head -c {BIG} /dev/urandom > /opt/big; echo small > /opt/small")
    assert r.returncode == 0, r.stderr
    return tree(upper(image))


def partials(*dirs: Path) -> List[str]:
    return [str(p) for d in dirs if d.is_dir() for p in d.rglob("*") if ".partial" in p.name]


def after(runner: Runner, image: Path) -> None:
    """The next run: no warning about an incomplete layer, the changes still there."""
    r = fim(runner, image, "fim-exec", "cat", "/opt/small")
    assert (r.returncode, r.stdout, r.stderr) == (0, "small\n", "")


def test_commit_whose_append_finds_the_disk_full(built_image: Path, runner: Runner,
                                                 workdir: Path, small: List[Path]) -> None:
    disk = mount(small, workdir, runner, "disk", "16m")
    image = place_image(built_image, disk, runner)
    before_upper = changes(runner, image)
    before, size = sha(image), image.stat().st_size
    # Room for the layer in tmp/ (about BIG), not for its copy into the image.
    filler = fill(disk, BIG + MIB // 2)
    line = one_error(fim(runner, image, "fim-layer", "commit", "binary"))
    assert line == f"E::No space left on device while appending a layer to '{image}'; the " \
                   "image is unchanged"
    assert (image.stat().st_size, sha(image)) == (size, before)
    assert tree(upper(image)) == before_upper
    assert not partials(disk)
    filler.unlink()
    after(runner, image)
    r = fim(runner, image, "fim-layer", "commit", "binary")
    assert r.returncode == 0, r.stderr
    assert fim(runner, image, "fim-layer", "verify").stdout.count(": ok\n") == 2


def test_commit_whose_layer_does_not_fit(built_image: Path, runner: Runner, workdir: Path,
                                         small: List[Path]) -> None:
    disk = mount(small, workdir, runner, "disk", "16m")
    image = place_image(built_image, disk, runner)
    before_upper = changes(runner, image)
    before = sha(image)
    filler = fill(disk, MIB // 2)
    line = one_error(fim(runner, image, "fim-layer", "commit", "binary"))
    tmp = image.parent / f".{image.name}.data/tmp"
    assert line == f"E::No space left on device while writing the layer in '{tmp}'; the " \
                   "changes stay in the upper directory"
    assert sha(image) == before
    assert tree(upper(image)) == before_upper
    assert not partials(disk)
    filler.unlink()
    after(runner, image)


def test_add_onto_a_full_disk(built_image: Path, runner: Runner, workdir: Path,
                              small: List[Path]) -> None:
    disk = mount(small, workdir, runner, "disk", "16m")
    image = place_image(built_image, disk, runner)
    src = workdir / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/big").write_bytes(os.urandom(BIG))
    (src / "opt/small").write_text("small\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    layer = workdir / "big.layer"
    r = fim(runner, image, "fim-layer", "create", str(src), str(layer))
    assert r.returncode == 0, r.stderr
    before, size = sha(image), image.stat().st_size
    filler = fill(disk, MIB // 2)
    line = one_error(fim(runner, image, "fim-layer", "add", str(layer)))
    assert line == f"E::No space left on device while appending a layer to '{image}'; the " \
                   "image is unchanged"
    assert (image.stat().st_size, sha(image)) == (size, before)
    filler.unlink()
    r = fim(runner, image, "fim-exec", "true")
    assert (r.returncode, r.stderr) == (0, "")
    assert fim(runner, image, "fim-layer", "add", str(layer)).returncode == 0
    after(runner, image)


def test_create_into_a_full_directory_leaves_no_file(built_image: Path, runner: Runner,
                                                     workdir: Path, small: List[Path]) -> None:
    image = place_image(built_image, workdir, runner)
    disk = mount(small, workdir, runner, "disk", "4m")
    src = workdir / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/big").write_bytes(os.urandom(BIG))
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    fill(disk, MIB // 2)
    out = disk / "big.layer"
    r = fim(runner, image, "fim-layer", "create", str(src), str(out))
    line = one_error(r)
    assert line == f"E::No space left on device while writing the layer '{out}'; nothing was " \
                   "written"
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_commit_to_a_file_on_a_full_disk(built_image: Path, runner: Runner, workdir: Path,
                                         small: List[Path]) -> None:
    """The layer is made in the data directory, then copied beside its destination:
    the copy fails, nothing is left there, the changes stay."""
    image = place_image(built_image, workdir, runner)
    before_upper = changes(runner, image)
    disk = mount(small, workdir, runner, "disk", "4m")
    fill(disk, MIB // 2)
    out = disk / "saved.layer"
    line = one_error(fim(runner, image, "fim-layer", "commit", "file", str(out)))
    assert line == f"E::No space left on device while saving the layer to '{out}'; the " \
                   "changes stay in the upper directory"
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    assert tree(upper(image)) == before_upper
    assert not partials(workdir)

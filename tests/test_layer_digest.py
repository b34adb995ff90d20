"""Layer digests on real images: recorded when a layer is made (fim build, fim-layer
create, commit, add of a layer made elsewhere), checked before the first mount
after a file changed (cached by its identity), on demand by `fim-layer verify`; a
damaged layer is one E:: line and nothing mounted. Layers without a digest (older
fim, other tools) mount as before."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path
from typing import List, Optional

from conftest import Runner, keeper_processes, traces

from fim.runtime.image import chain, digest, header

DAMAGED = "is damaged (its digest does not match); nothing was mounted"


def fim(runner: Runner, image: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *args], env=env)


def elements(image: Path) -> List[chain.Element]:
    fd = os.open(image, os.O_RDONLY)
    try:
        return chain.scan(fd, header.read(str(image))).elements
    finally:
        os.close(fd)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("E::"), r.stderr
    return lines[0]


def verify_lines(runner: Runner, image: Path, **env: str) -> List[str]:
    r = fim(runner, image, "fim-layer", "verify", **env)
    return [line.rsplit(": ", 1)[1] for line in r.stdout.splitlines()]


def test_built_layers_carry_a_digest_and_damage_is_refused(image: Path, runner: Runner) -> None:
    [layer0] = elements(image)
    fd = os.open(image, os.O_RDONLY)
    try:
        assert digest.check(fd, layer0.offset, layer0.size) == digest.OK
    finally:
        os.close(fd)
    r = fim(runner, image, "fim-layer", "verify")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"0:{layer0.offset}:{layer0.size}:{image}: ok\n"
    assert fim(runner, image, "fim-exec", "true").returncode == 0  # checked, cached
    flip(image, layer0.offset + layer0.size // 2)
    r = fim(runner, image, "fim-exec", "cat", "/opt/base/keep", FIM_DEBUG="1")
    line = one_error(r)
    assert line == f"E::Layer 0 of '{image}' {DAMAGED} (fim-layer verify checks every layer)"
    assert r.returncode == 1
    assert "D::Mounting layer" not in r.stdout and "keep" not in r.stdout
    assert not traces(image)
    r = fim(runner, image, "fim-layer", "verify")
    assert r.stdout == f"0:{layer0.offset}:{layer0.size}:{image}: damaged (its digest does not " \
                       "match)\n"
    assert r.returncode == 1 and r.stderr == "E::1 of 1 layers are damaged (0)\n"


def test_an_unchanged_image_is_not_hashed_again(image: Path, runner: Runner) -> None:
    """The cache: one file per layer file, its identity, the layers that passed."""
    assert fim(runner, image, "fim-exec", "true").returncode == 0
    st = image.stat()
    gdir = "/tmp/fim" if runner.user is None else f"/tmp/fim-{runner.uid}"
    build_id = header.read(str(image)).build_id
    cache = Path(gdir, "app", build_id, "verified", f"{st.st_dev:x}-{st.st_ino:x}")
    [layer0] = elements(image)
    assert cache.read_text().splitlines() == [
        f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}",
        f"{layer0.offset} {layer0.size}"]
    stamp = cache.stat().st_mtime_ns
    assert fim(runner, image, "fim-exec", "true").returncode == 0
    assert cache.stat().st_mtime_ns == stamp, "an unchanged image is not checked again"
    # A setting rewrites the image: the next run checks again.
    assert fim(runner, image, "fim-perms", "add", "network").returncode == 0
    assert fim(runner, image, "fim-exec", "true").returncode == 0
    assert cache.read_text().splitlines()[0] != \
        f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def test_damage_after_a_kept_launch_is_caught_before_the_mounts_are_reused(
        image: Path, runner: Runner) -> None:
    """A keeper holds the mounts of the image it was started for; the damaged image is
    another file identity, checked before any kept mount is reused."""
    r = fim(runner, image, "fim-exec", "cat", "/opt/base/keep", FIM_KEEP="30")
    assert (r.returncode, r.stdout) == (0, "keep\n"), r.stderr
    try:
        [layer0] = elements(image)
        flip(image, layer0.offset + 100)
        line = one_error(fim(runner, image, "fim-exec", "cat", "/opt/base/keep", FIM_KEEP="30"))
        assert DAMAGED in line
    finally:
        build_id = header.read(str(image)).build_id
        for pid in keeper_processes({build_id}):
            os.kill(pid, 9)


def test_commits_and_created_layers_carry_a_digest(image: Path, runner: Runner,
                                                  workdir: Path) -> None:
    assert fim(runner, image, "fim-root", "sh", "-c", "echo one > /opt/one").returncode == 0
    assert fim(runner, image, "fim-layer", "commit", "binary").returncode == 0
    assert fim(runner, image, "fim-root", "sh", "-c", "echo two > /opt/two").returncode == 0
    r = fim(runner, image, "fim-layer", "commit", "layer")
    assert r.returncode == 0, r.stderr
    managed = image.parent / f".{image.name}.data/layers/layer-000.layer"
    src = workdir / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/three").write_text("three\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    made = workdir / "three.layer"
    assert fim(runner, image, "fim-layer", "create", str(src), str(made)).returncode == 0
    assert verify_lines(runner, image, FIM_LAYERS=str(made)) == ["ok"] * 4
    r = fim(runner, image, "fim-exec", "cat", "/opt/one", "/opt/two", "/opt/three",
            FIM_LAYERS=str(made))
    assert (r.stdout, r.stderr) == ("one\ntwo\nthree\n", "")
    flip(managed, 1000)
    line = one_error(fim(runner, image, "fim-exec", "true"))
    assert line.startswith(f"E::Layer 2 of '{managed}' {DAMAGED}")
    flip(managed, 1000)
    flip(made, made.stat().st_size - 5)  # its digest itself
    line = one_error(fim(runner, image, "fim-exec", "true", FIM_LAYERS=str(made)))
    assert line.startswith(f"E::Layer 3 of '{made}' {DAMAGED}")
    assert verify_lines(runner, image, FIM_LAYERS=str(made)) == \
        ["ok", "ok", "ok", "damaged (its digest does not match)"]


def bare_layer(runner: Runner, workdir: Path, name: str, tree: Optional[Path] = None) -> Path:
    """A layer made by mksquashfs itself: what an older fim or another tool made."""
    src = tree
    if src is None:
        src = workdir / f"{name}-src"
        (src / "opt").mkdir(parents=True)
        (src / f"opt/{name}").write_text(f"{name}\n")
    out = workdir / f"{name}.layer"
    subprocess.run(["mksquashfs", str(src), str(out), "-comp", "zstd", "-quiet", "-no-progress",
                    "-all-root"], check=True, capture_output=True)
    os.chown(out, runner.uid, -1)
    return out


def test_layers_without_a_digest_mount_as_before(image: Path, runner: Runner,
                                                 workdir: Path) -> None:
    old = bare_layer(runner, workdir, "old")
    r = fim(runner, image, "fim-exec", "cat", "/opt/old", FIM_LAYERS=str(old))
    assert (r.returncode, r.stdout, r.stderr) == (0, "old\n", "")
    assert verify_lines(runner, image, FIM_LAYERS=str(old)) == ["ok", "no digest"]
    # Added to the image, it gets a digest as it is copied.
    r = fim(runner, image, "fim-layer", "add", str(old))
    assert r.returncode == 0, r.stderr
    assert verify_lines(runner, image) == ["ok", "ok"]
    assert elements(image)[1].size == old.stat().st_size + digest.SIZE
    r = fim(runner, image, "fim-exec", "cat", "/opt/old")
    assert (r.stdout, r.stderr) == ("old\n", "")


def test_an_image_of_an_older_fim_without_digests_still_runs(image: Path, runner: Runner,
                                                             workdir: Path,
                                                             built_image: Path) -> None:
    """An image whose layer has no trailer (made before digests) runs unchecked."""
    old = bare_layer(runner, workdir, "base", built_image.parent / "rootfs")
    head = header.read(str(image))
    data = image.read_bytes()[:head.chain_offset]
    image.write_bytes(data + struct.pack("<Q", old.stat().st_size) + old.read_bytes())
    r = fim(runner, image, "fim-exec", "cat", "/opt/base/keep")
    assert (r.returncode, r.stdout, r.stderr) == (0, "keep\n", "")
    assert verify_lines(runner, image) == ["no digest"]


def test_add_refuses_a_damaged_layer_and_leaves_the_image(image: Path, runner: Runner,
                                                          workdir: Path) -> None:
    src = workdir / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/x").write_text("x\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    made = workdir / "x.layer"
    assert fim(runner, image, "fim-layer", "create", str(src), str(made)).returncode == 0
    flip(made, 300)
    before = image.read_bytes()
    line = one_error(fim(runner, image, "fim-layer", "add", str(made)))
    assert line == f"E::Layer '{made}' is damaged (its digest does not match); the image is " \
                   "unchanged"
    assert image.read_bytes() == before


def test_a_foreign_element_is_one_line_every_time(image: Path, runner: Runner) -> None:
    """A layer that is no layer, on top of a good one: one E:: line, and the good
    layer's mount tool is never left running (it would mount after the instance
    unwound, a dead FUSE mount: "Transport endpoint is not connected")."""
    junk = os.urandom(100000)
    with open(image, "ab") as f:
        f.write(struct.pack("<Q", len(junk)) + junk)
    for _ in range(12):
        line = one_error(fim(runner, image, "fim-exec", "true"))
        assert "is not a known layer format (SquashFS, DwarFS); nothing was mounted" in line
    deadline = time.monotonic() + 5
    while traces(image) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not traces(image)

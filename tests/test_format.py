"""The image format on real files: header, reserved space and journal, layer chain, bad input."""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fim.runtime.errors import FimError
from fim.runtime.image import chain, header, reserved


def test_inspect_reports_header_and_layers(built_image: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "fim", "inspect", "--json", str(built_image)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads(r.stdout)
    assert info["header"]["version"] == header.VERSION
    assert info["reserved"]["overlay"] == "unset (BWRAP)"
    assert [layer["format"] for layer in info["layers"]] == ["squashfs"]
    assert info["layers"][0]["offset"] == info["header"]["chain_offset"] + 8


def test_layout_is_aligned_and_ordered(built_image: Path) -> None:
    h = header.read(str(built_image))
    assert h.reserved_offset == header.LAUNCHER_SIZE + header.HEADER_BLOCK
    assert h.reserved_size == reserved.RESERVED_SIZE
    assert h.reserved_offset + h.reserved_size <= h.journal_offset
    assert h.journal_offset + h.journal_size <= h.payload_offset
    assert h.payload_offset + h.payload_size <= h.chain_offset
    assert built_image.read_bytes()[:10] == b"#!/bin/sh\n"
    assert os.stat(built_image).st_mode & 0o777 == 0o755


def test_reserved_regions_follow_flatimage() -> None:
    r = reserved.REGIONS
    assert (r["permissions"].offset, r["notify"].offset, r["overlay"].offset,
            r["casefold"].offset, r["desktop"].offset) == (0, 8, 9, 10, 11)
    assert r["boot"].offset == 11 + 4096 and r["boot"].size == 8192
    assert r["unshare"].size == 2


def test_region_write_refuses_oversized_values(built_image: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.flatimage"
    shutil.copy(built_image, img)
    h = header.read(str(img))
    region = reserved.REGIONS["boot"]
    reserved.write_region(str(img), h, region, b'{"program":"sh"}')
    with pytest.raises(FimError, match="too large"):
        reserved.write_region(str(img), h, region, b"x" * (region.size + 1))
    fd = os.open(img, os.O_RDONLY)
    try:
        assert reserved.read_prefix(fd, h, region) == b'{"program":"sh"}'
    finally:
        os.close(fd)


def test_interrupted_write_reads_as_new_value_once_journaled(built_image: Path,
                                                              tmp_path: Path) -> None:
    """A crash after journaling but during the in-place copy must not expose a mix."""
    img = tmp_path / "a.flatimage"
    shutil.copy(built_image, img)
    h = header.read(str(img))
    region = reserved.REGIONS["environment"]
    reserved.write_region(str(img), h, region, b'["OLD=1"]')
    new = b'["NEW=2"]'.ljust(region.size, b"\0")
    # Simulate the crash: journal complete, region half overwritten with garbage.
    fd = os.open(img, os.O_RDWR)
    try:
        import zlib

        start = h.reserved_offset + region.offset
        os.pwrite(fd, new, h.journal_offset + 24)
        os.pwrite(fd, struct.pack("<8sQII", b"FIMJRNL1", start, len(new), zlib.crc32(new)),
                  h.journal_offset)
        os.pwrite(fd, b'["NE', start)
        assert reserved.read_prefix(fd, h, region) == b'["NEW=2"]'
        reserved.recover(fd, h)
        assert os.pread(fd, 9, start) == b'["NEW=2"]'
    finally:
        os.close(fd)


def test_torn_journal_keeps_old_value(built_image: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.flatimage"
    shutil.copy(built_image, img)
    h = header.read(str(img))
    region = reserved.REGIONS["environment"]
    reserved.write_region(str(img), h, region, b'["OLD=1"]')
    fd = os.open(img, os.O_RDWR)
    try:
        # Journal head written, its data not: the checksum does not match.
        start = h.reserved_offset + region.offset
        os.pwrite(fd, struct.pack("<8sQII", b"FIMJRNL1", start, 9, 12345), h.journal_offset)
        assert reserved.read_prefix(fd, h, region) == b'["OLD=1"]'
    finally:
        os.close(fd)


def test_chain_skips_a_torn_last_element(built_image: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.flatimage"
    shutil.copy(built_image, img)
    h = header.read(str(img))
    with open(img, "ab") as f:
        f.write(struct.pack("<Q", 1 << 20) + b"hsqs" + b"\0" * 1000)
    fd = os.open(img, os.O_RDONLY)
    try:
        scanned = chain.scan(fd, h)
    finally:
        os.close(fd)
    assert len(scanned.elements) == 1 and scanned.torn == 8 + 1004


def _run_fim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fim", *args], capture_output=True, text=True)


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(20000))
    r = _run_fim("inspect", str(junk))
    assert r.returncode != 0
    assert r.stderr.startswith("E::") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_truncated_image_gives_one_line(built_image: Path, tmp_path: Path) -> None:
    h = header.read(str(built_image))
    data = built_image.read_bytes()
    for cut in (h.reserved_offset + 100, h.payload_offset + 500):
        img = tmp_path / f"cut{cut}.flatimage"
        img.write_bytes(data[:cut])
        os.chmod(img, 0o755)
        env = dict(os.environ, TMPDIR=str(tmp_path))
        r = subprocess.run([str(img), "fim-exec", "true"], capture_output=True, text=True, env=env)
        assert r.returncode != 0
        assert r.stderr.startswith("E::") and r.stderr.count("\n") == 1, r.stderr
        r = _run_fim("inspect", str(img))
        assert r.returncode != 0 and r.stderr.startswith("E::"), r.stderr


def test_foreign_version_is_refused(built_image: Path, tmp_path: Path) -> None:
    img = tmp_path / "v9.flatimage"
    shutil.copy(built_image, img)
    with open(img, "r+b") as f:
        f.seek(header.HEADER_OFFSET + 8)
        f.write(struct.pack("<I", 9))
    r = subprocess.run([str(img), "fim-exec", "true"], capture_output=True, text=True)
    assert r.returncode == 125 and "version 9" in r.stderr and r.stderr.startswith("E::")
    r = _run_fim("inspect", str(img))
    assert r.returncode == 125 and "version 9" in r.stderr


def test_build_takes_the_compression_level(built_image: Path, tmp_path: Path) -> None:
    """`fim build` honours FIM_COMPRESSION_LEVEL as commit and create do: a bad value is
    one line before anything is built, 0 and 9 give images that differ in size."""
    rootfs = built_image.parent / "rootfs"
    for bad in ("10", "high"):
        out = tmp_path / f"bad-{bad}.flatimage"
        r = subprocess.run([sys.executable, "-m", "fim", "build", str(rootfs), str(out)],
                           capture_output=True, text=True,
                           env=dict(os.environ, FIM_COMPRESSION_LEVEL=bad))
        assert r.returncode == 125 and r.stderr.startswith("E::FIM_COMPRESSION_LEVEL"), r.stderr
        assert r.stderr.count("\n") == 1 and not out.exists()
    sizes = {}
    for good in ("0", "9"):
        out = tmp_path / f"level-{good}.flatimage"
        r = subprocess.run([sys.executable, "-m", "fim", "build", str(rootfs), str(out)],
                           capture_output=True, text=True,
                           env=dict(os.environ, FIM_COMPRESSION_LEVEL=good))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        fd = os.open(out, os.O_RDONLY)
        try:
            sizes[good] = sum(e.size for e in chain.scan(fd, header.read(str(out))).elements)
        finally:
            os.close(fd)
        r = subprocess.run([str(out), "fim-exec", "true"],
                           capture_output=True, text=True,
                           env=dict(os.environ, FIM_DIR_DATA=str(tmp_path / f"data-{good}")))
        assert r.returncode == 0, r.stderr
    assert sizes["9"] < sizes["0"], sizes


def test_build_shows_progress_on_a_terminal_only(built_image: Path, tmp_path: Path) -> None:
    """On a terminal `fim build` draws mksquashfs's progress bar; in a script (the test
    above) it writes nothing."""
    rootfs = built_image.parent / "rootfs"
    out = tmp_path / "tty.flatimage"
    argv = [sys.executable, "-m", "fim", "build", str(rootfs), str(out)]
    # script(1) gives the build a pseudo-terminal and copies what it drew to stdout;
    # its terminal is 0 columns wide when ours is none, and mksquashfs draws its bar
    # as wide as the terminal.
    r = subprocess.run(["script", "-qec", "stty cols 80 rows 24; " + shlex.join(argv),
                        "/dev/null"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    assert "100%" in r.stdout, r.stdout

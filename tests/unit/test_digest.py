"""Layer digests (image/digest.py), the chain append that checks and writes them and
rolls back on any OS error (image/chain.py), the check before mount and its cache
(layers/verify.py), and the header's bounds (image/header.py): no mounts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from fim.runtime.errors import FimError
from fim.runtime.image import chain, digest
from fim.runtime.image.file import open_image
from fim.runtime.image.header import HEADER_OFFSET, LAUNCHER_SIZE, Header, align, unpack
from fim.runtime.image.reserved import JOURNAL_SIZE, RESERVED_SIZE
from fim.runtime.layers import Layer, verify
from fim.runtime.paths import Paths


def fake_squashfs(path: Path, size: int = 20000, claimed: int = -1) -> Path:
    """Bytes with a SquashFS magic and bytes_used: what the checks read of a layer."""
    body = bytearray(os.urandom(size))
    body[0:4] = b"hsqs"
    body[40:48] = (size if claimed < 0 else claimed).to_bytes(8, "little")
    path.write_bytes(bytes(body))
    return path


def header(end: int) -> Header:
    res = LAUNCHER_SIZE + 4096
    journal = align(res + RESERVED_SIZE)
    payload = align(journal + JOURNAL_SIZE)
    return Header(reserved_offset=res, reserved_size=RESERVED_SIZE, journal_offset=journal,
                  journal_size=JOURNAL_SIZE, payload_offset=payload, payload_size=0,
                  chain_offset=payload if end < 0 else end, build_id="abc123")


def make_image(path: Path) -> Path:
    head = header(-1)
    with open(path, "wb") as f:
        f.write(b"#!/bin/sh\n".ljust(LAUNCHER_SIZE, b"\n"))
        f.write(head.pack())
        f.truncate(head.chain_offset)
    return path


def paths_for(tmp_path: Path) -> Paths:
    return Paths(str(tmp_path / "img"), str(tmp_path / "global"), "abc123", 1,
                 str(tmp_path / ".img.data"))


def test_seal_and_check(tmp_path: Path) -> None:
    layer = fake_squashfs(tmp_path / "l")
    digest.seal(str(layer))
    size = layer.stat().st_size
    assert size == 20000 + digest.SIZE
    fd = os.open(layer, os.O_RDONLY)
    try:
        assert digest.check(fd, 0, size) == digest.OK
    finally:
        os.close(fd)
    data = bytearray(layer.read_bytes())
    for where in (0, 12345, 19999, 20000 + 8, size - 1):  # body, length, digest
        damaged = bytearray(data)
        damaged[where] ^= 0x10
        layer.write_bytes(bytes(damaged))
        fd = os.open(layer, os.O_RDONLY)
        try:
            assert digest.check(fd, 0, size) == digest.DAMAGED, where
        finally:
            os.close(fd)


def test_a_layer_without_trailer_has_no_digest(tmp_path: Path) -> None:
    layer = fake_squashfs(tmp_path / "l")
    fd = os.open(layer, os.O_RDONLY)
    try:
        assert digest.check(fd, 0, 20000) == digest.NONE
        assert verify.state(fd, 0, 20000) == digest.NONE
        assert verify.state(fd, 0, 19000) == verify.TOO_SHORT  # its superblock says more
    finally:
        os.close(fd)


def test_append_seals_checks_and_refuses_damage(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    head = header(-1)
    bare = fake_squashfs(tmp_path / "bare")
    element = chain.append(str(image), head, str(bare), seal=True)
    assert element.size == 20000 + digest.SIZE
    sealed = fake_squashfs(tmp_path / "sealed", 30000)
    digest.seal(str(sealed))
    second = chain.append(str(image), head, str(sealed))
    assert second.size == 30000 + digest.SIZE
    fd = os.open(image, os.O_RDONLY)
    try:
        scanned = chain.scan(fd, head)
        assert [(e.offset, e.size) for e in scanned.elements] == \
            [(element.offset, element.size), (second.offset, second.size)]
        assert all(digest.check(fd, e.offset, e.size) == digest.OK for e in scanned.elements)
    finally:
        os.close(fd)
    before = image.read_bytes()
    data = bytearray(sealed.read_bytes())
    data[100] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(FimError) as refused:
        chain.append(str(image), head, str(sealed))
    assert "is damaged (its digest does not match); the image is unchanged" in refused.value.message
    assert image.read_bytes() == before


def test_a_failed_append_truncates_the_image_back(tmp_path: Path) -> None:
    """A real OS error in the middle of the copy: RLIMIT_FSIZE makes the write past it
    fail with EFBIG, as a full disk fails with ENOSPC."""
    image = make_image(tmp_path / "img")
    big = fake_squashfs(tmp_path / "big", 3 << 20)
    before = image.read_bytes()
    limit = len(before) + (1 << 20)
    code = (
        "import resource, signal, sys\n"
        "from fim.runtime.image import chain\n"
        "from fim.runtime.errors import FimError\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from test_digest import header\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "try:\n"
        "    chain.append(sys.argv[1], header(-1), sys.argv[2], seal=True)\n"
        "except FimError as e:\n"
        "    print(e.message)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(image), str(big),
                        str(Path(__file__).parent)], capture_output=True, text=True)
    assert r.stderr == ""
    assert r.stdout.startswith("File too large while appending a layer to "), r.stdout
    assert r.stdout.rstrip().endswith("; the image is unchanged")
    assert image.read_bytes() == before


def test_an_append_over_a_torn_tail_says_what_it_dropped(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    with open(image, "ab") as f:
        f.write((1 << 40).to_bytes(8, "little") + b"torn")
    missing = tmp_path / "gone"
    fake_squashfs(missing)
    sealed = fake_squashfs(tmp_path / "s")
    digest.seal(str(sealed))
    data = bytearray(sealed.read_bytes())
    data[7] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(FimError) as refused:
        chain.append(str(image), header(-1), str(sealed))
    assert refused.value.message.endswith("as before, without its incomplete last layer")


def test_before_mount_refuses_damage_and_caches_what_passed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = fake_squashfs(tmp_path / "l.layer")
    digest.seal(str(layer))
    paths = paths_for(tmp_path)
    layers = [Layer(0, str(layer), 0, layer.stat().st_size, False)]
    hashed: List[int] = []
    real = digest.sha256_of

    def counting(fd: int, offset: int, length: int) -> bytes:
        hashed.append(length)
        return real(fd, offset, length)

    monkeypatch.setattr(digest, "sha256_of", counting)
    verify.before_mount(layers, paths)
    verify.before_mount(layers, paths)
    assert hashed == [20000], "the second run reads the cache, not the layer"
    data = bytearray(layer.read_bytes())
    data[500] ^= 4
    layer.write_bytes(bytes(data))  # a new mtime and ctime: the cache no longer applies
    with pytest.raises(FimError) as refused:
        verify.before_mount(layers, paths)
    assert refused.value.message.startswith(f"Layer 0 of '{layer}' is damaged (its digest "
                                            "does not match); nothing was mounted")
    assert refused.value.code == 1
    with pytest.raises(FimError):
        verify.before_mount(layers, paths)  # a failure is never cached


def test_before_mount_names_what_is_no_layer(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(FimError) as refused:
        verify.before_mount([Layer(3, str(junk), 0, 5000, False)], paths_for(tmp_path))
    assert "is not a known layer format" in refused.value.message


def test_layers_without_digest_pass_and_report_so(tmp_path: Path) -> None:
    layer = fake_squashfs(tmp_path / "old.layer")
    layers = [Layer(0, str(layer), 0, 20000, False)]
    verify.before_mount(layers, paths_for(tmp_path))
    assert [state for _, state in verify.report(layers, paths_for(tmp_path))] == [digest.NONE]


@pytest.mark.parametrize("field,value", [
    (16, 100),  # the reserved space inside the header
    (24, 1 << 62),  # a reserved space past the end
    (40, 1 << 63),  # a huge journal
    (56, (1 << 64) - 1),  # a huge payload
    (48, 0),  # the payload before the reserved space
])
def test_header_fields_out_of_order_are_damage(tmp_path: Path, field: int, value: int) -> None:
    block = bytearray(header(-1).pack())
    block[field:field + 8] = value.to_bytes(8, "little")
    with pytest.raises(FimError) as refused:
        unpack(bytes(block), "img", header(-1).chain_offset)
    assert "is damaged" in refused.value.message or "truncated" in refused.value.message


def test_a_short_reserved_space_is_refused(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    with open(image, "r+b") as f:
        f.seek(HEADER_OFFSET + 24)
        f.write((RESERVED_SIZE - 1).to_bytes(8, "little"))
    with pytest.raises(FimError) as refused:
        open_image(str(image))
    assert "less room than their regions need" in refused.value.message

"""The runtime payload: packed by the builder, read by the image's own bootstrap code,
which turns every damaged or hostile record into one line (never a traceback, a
huge allocation or a file outside its directory)."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from fim.builder import payload
from fim.runtime import bootstrap
from fim.runtime.image.header import HEADER_BLOCK, HEADER_OFFSET, Header

PAYLOAD_AT = HEADER_OFFSET + HEADER_BLOCK


def image_with(tmp_path: Path, blob: bytes, digest: bool = True,
               payload_size: int = -1) -> Tuple[Path, bytes]:
    """A file with a header and `blob` as its payload (no reserved space: the
    bootstrap reads only the payload); its header block."""
    size = len(blob) if payload_size < 0 else payload_size
    head = Header(reserved_offset=PAYLOAD_AT, reserved_size=0, journal_offset=PAYLOAD_AT,
                  journal_size=0, payload_offset=PAYLOAD_AT, payload_size=size,
                  chain_offset=PAYLOAD_AT + len(blob), build_id="0123abcd",
                  payload_sha256=hashlib.sha256(blob).digest() if digest else b"").pack()
    path = tmp_path / "img"
    path.write_bytes(b"\n" * HEADER_OFFSET + head + blob)
    return path, head


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[List[int]]:
    fds: List[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def extract(path: Path, head: bytes, dest: Path, fds: List[int]) -> None:
    fd = os.open(path, os.O_RDONLY)
    fds.append(fd)
    bootstrap.extract(str(path), fd, head, str(dest))


def refused(capsys: pytest.CaptureFixture, call: object, *args: object) -> str:
    """The one E:: line (exit 125) `call(*args)` ends with."""
    with pytest.raises(SystemExit) as exit_info:
        call(*args)  # type: ignore[operator]
    assert exit_info.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith("E::") and err.count("\n") == 1, err
    return err


def record(name: bytes, data: bytes, mode: int = 0o644, clen: int = -1) -> bytes:
    packed = zlib.compress(data)
    return struct.pack("<HII", len(name), mode, len(packed) if clen < 0 else clen) + name + packed


def test_round_trip_through_the_bootstrap_decoder() -> None:
    entries = [("a/b.py", 0o644, b"print(1)\n"), ("tools/bin/x", 0o755, os.urandom(5000)),
               ("empty", 0o600, b"")]
    assert list(bootstrap.records(payload.pack(entries))) == entries


def test_extract_writes_files_with_their_modes(tmp_path: Path, opened: List[int]) -> None:
    blob = payload.pack([("fim/x.py", 0o644, b"x = 1\n"), ("tools/bin/t", 0o755, b"#!\n")])
    path, head = image_with(tmp_path, blob)
    extract(path, head, tmp_path / "out", opened)
    assert (tmp_path / "out/fim/x.py").read_bytes() == b"x = 1\n"
    assert os.stat(tmp_path / "out/tools/bin/t").st_mode & 0o777 == 0o755


def test_modes_lose_setuid_and_write_for_others(tmp_path: Path, opened: List[int]) -> None:
    blob = payload.pack([("t", 0o6777, b"#!\n")])
    path, head = image_with(tmp_path, blob)
    extract(path, head, tmp_path / "out", opened)
    assert os.stat(tmp_path / "out/t").st_mode & 0o7777 == 0o755


def test_a_damaged_payload_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       opened: List[int]) -> None:
    blob = payload.pack([("fim/x.py", 0o644, b"x = 1\n" * 100)])
    damaged = blob[:20] + b"\xff" * 10 + blob[30:]
    path, head = image_with(tmp_path, damaged, digest=False)
    err = refused(capsys, extract, path, head, tmp_path / "out", opened)
    assert "runtime payload unreadable" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.*")), "the partial extraction is removed"


def test_a_payload_that_does_not_match_its_digest_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, opened: List[int]) -> None:
    blob = payload.pack([("fim/x.py", 0o644, b"x = 1\n")])
    path, head = image_with(tmp_path, blob)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # still valid zlib framing is not needed: the digest is checked first
    path.write_bytes(bytes(data))
    err = refused(capsys, extract, path, head, tmp_path / "out", opened)
    assert "does not match its digest" in err


@pytest.mark.parametrize("name", [b"../escape", b"/tmp/abs", b"a/../../b", b"a//b", b"",
                                  b"./x", b"a\0b", b"\xff\xfe"])
def test_records_cannot_leave_their_directory(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              opened: List[int], name: bytes) -> None:
    blob = payload.MAGIC + record(b"ok", b"1") + record(name, b"evil")
    path, head = image_with(tmp_path, blob)
    (tmp_path / "deep").mkdir()
    err = refused(capsys, extract, path, head, tmp_path / "deep/out", opened)
    assert "runtime payload unreadable" in err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "deep").joinpath("b").exists()
    assert not any(p.name == "out" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("blob", [
    payload.MAGIC + b"\x05\x00",  # a record shorter than its fixed fields
    payload.MAGIC + struct.pack("<HII", 4, 0o644, 1 << 31) + b"name",  # length lies
    payload.MAGIC + struct.pack("<HII", 60000, 0o644, 0) + b"x",  # name length lies
    payload.MAGIC + record(b"x", b"data") + b"\x01",  # a trailing byte
])
def test_records_that_lie_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       opened: List[int], blob: bytes) -> None:
    path, head = image_with(tmp_path, blob)
    assert "runtime payload unreadable" in refused(capsys, extract, path, head,
                                                   tmp_path / "out", opened)


def test_a_decompression_bomb_is_refused_without_inflating_it(
        tmp_path: Path, capsys: pytest.CaptureFixture, opened: List[int]) -> None:
    bomb = zlib.compress(b"\0" * (bootstrap.MAX_FILE + 1), 9)
    blob = payload.MAGIC + struct.pack("<HII", 1, 0o644, len(bomb)) + b"b" + bomb
    path, head = image_with(tmp_path, blob)
    assert "too large" in refused(capsys, extract, path, head, tmp_path / "out", opened)


@pytest.mark.parametrize("size", [1 << 62, (1 << 64) - 1, bootstrap.MAX_PAYLOAD + 1])
def test_huge_payload_sizes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         opened: List[int], size: int) -> None:
    blob = payload.pack([("x", 0o644, b"1")])
    path, head = image_with(tmp_path, blob, payload_size=size)
    err = refused(capsys, extract, path, head, tmp_path / "out", opened)
    assert "truncated" in err or "impossible place" in err


@pytest.mark.parametrize("raw", [b"ab\0cd", b"../../x", b"a/b", b"caf\xc3\xa9", b"", b"\0" * 32,
                                 b"a.b"])
def test_build_ids_that_are_no_name_are_refused(capsys: pytest.CaptureFixture,
                                                raw: bytes) -> None:
    header = bytearray(4096)
    header[72:72 + len(raw)] = raw
    assert "build id" in refused(capsys, bootstrap.build_id, "img", bytes(header))


def test_the_builder_writes_the_payload_digest_the_bootstrap_checks(tmp_path: Path) -> None:
    blob = payload.pack([("x", 0o644, b"1")])
    path, head = image_with(tmp_path, blob)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert bootstrap.payload_of(str(path), fd, head) == blob
    finally:
        os.close(fd)

"""The runtime payload: packed by the builder, read by the image's own bootstrap code."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from fim.builder import payload
from fim.runtime import bootstrap


def test_round_trip_through_the_bootstrap_decoder() -> None:
    entries = [("a/b.py", 0o644, b"print(1)\n"), ("tools/bin/x", 0o755, os.urandom(5000)),
               ("empty", 0o600, b"")]
    assert list(bootstrap.records(payload.pack(entries))) == entries


def test_extract_writes_files_with_their_modes(tmp_path: Path) -> None:
    blob = payload.pack([("fim/x.py", 0o644, b"x = 1\n"), ("tools/bin/t", 0o755, b"#!\n")])
    image = tmp_path / "img"
    header = bytearray(4096)
    struct.pack_into("<QQ", header, 48, 100, len(blob))
    image.write_bytes(b"\0" * 100 + blob)
    fd = os.open(image, os.O_RDONLY)
    try:
        bootstrap.extract(str(image), fd, bytes(header), str(tmp_path / "out"))
    finally:
        os.close(fd)
    assert (tmp_path / "out/fim/x.py").read_bytes() == b"x = 1\n"
    assert os.stat(tmp_path / "out/tools/bin/t").st_mode & 0o777 == 0o755


def test_a_damaged_payload_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blob = payload.pack([("fim/x.py", 0o644, b"x = 1\n" * 100)])
    damaged = blob[:20] + b"\xff" * 10 + blob[30:]
    image = tmp_path / "img"
    header = bytearray(4096)
    struct.pack_into("<QQ", header, 48, 0, len(damaged))
    image.write_bytes(damaged)
    fd = os.open(image, os.O_RDONLY)
    try:
        with pytest.raises(SystemExit) as exit_info:
            bootstrap.extract(str(image), fd, bytes(header), str(tmp_path / "out"))
    finally:
        os.close(fd)
    assert exit_info.value.code == 125
    assert capsys.readouterr().err.startswith("E::")

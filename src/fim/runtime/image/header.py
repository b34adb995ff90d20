"""The fixed header that locates every part of an image file.

Layout (little-endian) at HEADER_OFFSET, after the `#!/bin/sh` launcher:

    magic 8s | version u32 | header size u32 |
    reserved offset u64 | reserved size u64 |
    journal offset u64 | journal size u64 |
    payload offset u64 | payload size u64 |
    chain offset u64 | build id 32s
"""

from __future__ import annotations

import struct

from fim.runtime.errors import FimError
from fim.runtime.record import dataclass

MAGIC = b"\x7fFIMAGE\x00"
VERSION = 1
LAUNCHER_SIZE = 8192
HEADER_OFFSET = LAUNCHER_SIZE
HEADER_BLOCK = 4096
ALIGN = 4096
_STRUCT = struct.Struct("<8sII7Q32s")


@dataclass(frozen=True)
class Header:
    reserved_offset: int
    reserved_size: int
    journal_offset: int
    journal_size: int
    payload_offset: int
    payload_size: int
    chain_offset: int
    build_id: str
    version: int = VERSION

    def pack(self) -> bytes:
        raw = _STRUCT.pack(
            MAGIC,
            self.version,
            _STRUCT.size,
            self.reserved_offset,
            self.reserved_size,
            self.journal_offset,
            self.journal_size,
            self.payload_offset,
            self.payload_size,
            self.chain_offset,
            self.build_id.encode("ascii"),
        )
        return raw.ljust(HEADER_BLOCK, b"\0")


def align(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def unpack(block: bytes, name: str, file_size: int) -> Header:
    """Parse and validate a header block read at HEADER_OFFSET of file `name`."""
    if len(block) < _STRUCT.size or block[:8] != MAGIC:
        raise FimError(f"'{name}' is not a fim image (no image header)")
    fields = _STRUCT.unpack_from(block)
    version = fields[1]
    if version != VERSION:
        raise FimError(
            f"'{name}' uses image format version {version}; this runtime reads version {VERSION}"
        )
    header = Header(
        reserved_offset=fields[3],
        reserved_size=fields[4],
        journal_offset=fields[5],
        journal_size=fields[6],
        payload_offset=fields[7],
        payload_size=fields[8],
        chain_offset=fields[9],
        build_id=fields[10].rstrip(b"\0").decode("ascii", "replace"),
        version=version,
    )
    if header.chain_offset > file_size:
        raise FimError(f"'{name}' is truncated (file ends before its first layer)")
    return header


def read(path: str) -> Header:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(HEADER_OFFSET)
            block = f.read(HEADER_BLOCK)
    except OSError as e:
        raise FimError(f"Cannot read image '{path}': {e.strerror}") from None
    return unpack(block, path, size)

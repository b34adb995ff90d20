"""The fixed header that locates every part of an image file.

Layout (little-endian) at HEADER_OFFSET, after the `#!/bin/sh` launcher:

    magic 8s | version u32 | header size u32 |
    reserved offset u64 | reserved size u64 |
    journal offset u64 | journal size u64 |
    payload offset u64 | payload size u64 |
    chain offset u64 | build id 32s | payload SHA-256 32s

The payload digest came later: the header size field tells whether it is there
(136) or not (104, images made before it); an old runtime reads the first 104
bytes and never looks further.
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
_STRUCT = struct.Struct("<8sII7Q32s")  # the fields every version-1 image has
_DIGEST = struct.Struct("<32s")  # then the payload's SHA-256, at _STRUCT.size
PACKED_SIZE = _STRUCT.size + _DIGEST.size


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
    payload_sha256: bytes = b""  # empty for images made before it was recorded

    def pack(self) -> bytes:
        raw = _STRUCT.pack(
            MAGIC,
            self.version,
            PACKED_SIZE,
            self.reserved_offset,
            self.reserved_size,
            self.journal_offset,
            self.journal_size,
            self.payload_offset,
            self.payload_size,
            self.chain_offset,
            self.build_id.encode("ascii"),
        ) + _DIGEST.pack(self.payload_sha256)
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
    digest = b""
    if fields[2] >= PACKED_SIZE and len(block) >= PACKED_SIZE:
        digest = _DIGEST.unpack_from(block, _STRUCT.size)[0]
        digest = b"" if digest == bytes(_DIGEST.size) else digest
    header = Header(
        reserved_offset=fields[3],
        reserved_size=fields[4],
        journal_offset=fields[5],
        journal_size=fields[6],
        payload_offset=fields[7],
        payload_size=fields[8],
        chain_offset=fields[9],
        build_id=_build_id(fields[10], name),
        version=version,
        payload_sha256=digest,
    )
    if header.chain_offset > file_size:
        raise FimError(f"'{name}' is truncated (file ends before its first layer)")
    if not _in_order(header):
        raise FimError(f"'{name}' is damaged (its header places the parts of the image "
                       "out of order or past its end)")
    return header


def _build_id(raw: bytes, name: str) -> str:
    """The build id field: NUL-padded ASCII letters, digits, '-' or '_' (fim writes 16
    hex digits). It names a directory, so anything else (a NUL inside, a slash, a dot,
    a byte past ASCII) is damage."""
    text = raw.rstrip(b"\0")
    if not text or text.translate(None, _ID_CHARS):
        raise FimError(f"'{name}' is damaged (its build id is not one of letters and digits)")
    return text.decode("ascii")


_ID_CHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


def _in_order(h: Header) -> bool:
    """Launcher, header, reserved space, journal, payload, chain: each part after the
    one before, none overlapping (and so none past the chain offset, which is inside
    the file). Damaged sizes are caught here, before any of them is read."""
    bounds = [HEADER_OFFSET + HEADER_BLOCK,
              h.reserved_offset, h.reserved_offset + h.reserved_size,
              h.journal_offset, h.journal_offset + h.journal_size,
              h.payload_offset, h.payload_offset + h.payload_size,
              h.chain_offset]
    return all(a <= b for a, b in zip(bounds, bounds[1:]))


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

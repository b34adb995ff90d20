"""The reserved space: FlatImage's fixed configuration regions, and crash-safe writes.

Offsets are relative to the start of the reserved space. A write goes through the
journal (a region of its own after the reserved space): the new bytes are made
durable in the journal first, then copied into place, then the journal is
cleared. A reader that finds a complete journal entry sees its bytes instead of
the region's, so a process killed at any instant leaves either the old or the
new value, never a mix.
"""

from __future__ import annotations

import os
import struct
import zlib

from fim.runtime.errors import FimError
from fim.runtime.image.header import Header
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Region:
    name: str
    offset: int
    size: int


def _layout() -> Dict[str, Region]:
    sizes = [
        ("permissions", 8),
        ("notify", 1),
        ("overlay", 1),
        ("casefold", 1),
        ("desktop", 4 * KIB),
        ("boot", 8 * KIB),
        ("icon", MIB),
        ("environment", MIB),
        ("bindings", MIB),
        ("remote", 4 * KIB),
        ("unshare", 2),
    ]
    regions: Dict[str, Region] = {}
    offset = 0
    for name, size in sizes:
        regions[name] = Region(name, offset, size)
        offset += size
    return regions


REGIONS = _layout()
RESERVED_SIZE = sum(r.size for r in REGIONS.values())

_JOURNAL_MAGIC = b"FIMJRNL1"
_JOURNAL_HEAD = struct.Struct("<8sQII")  # magic, absolute offset, length, crc32
JOURNAL_SIZE = _JOURNAL_HEAD.size + max(r.size for r in REGIONS.values())


def _pending(fd: int, header: Header) -> Optional[Tuple[int, bytes]]:
    """The complete journal entry, if a write was interrupted after journaling."""
    head = os.pread(fd, _JOURNAL_HEAD.size, header.journal_offset)
    if len(head) < _JOURNAL_HEAD.size or head[:8] != _JOURNAL_MAGIC:
        return None
    _, offset, length, crc = _JOURNAL_HEAD.unpack(head)
    if length > header.journal_size - _JOURNAL_HEAD.size:
        return None
    if offset < header.reserved_offset or offset + length > header.reserved_offset + \
            header.reserved_size:
        # Only the reserved space is ever journaled: a head aiming elsewhere is damage,
        # and the next write would copy its bytes over the payload or a layer.
        return None
    data = os.pread(fd, length, header.journal_offset + _JOURNAL_HEAD.size)
    if len(data) != length or zlib.crc32(data) != crc:
        return None
    return offset, data


def read_span(fd: int, header: Header, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the reserved space, as the last completed
    write left them."""
    start = header.reserved_offset + offset
    data = bytearray(os.pread(fd, length, start).ljust(length, b"\0"))
    pending = _pending(fd, header)
    if pending is not None:
        p_start, p_data = pending
        lo, hi = max(start, p_start), min(start + length, p_start + len(p_data))
        if lo < hi:
            data[lo - start:hi - start] = p_data[lo - p_start:hi - p_start]
    return bytes(data)


def read_region(fd: int, header: Header, region: Region, limit: Optional[int] = None) -> bytes:
    """A region's bytes; `limit` reads only a prefix (JSON regions stop at their first NUL,
    and most hold a few bytes of a megabyte)."""
    size = region.size if limit is None else min(limit, region.size)
    return read_span(fd, header, region.offset, size)


def read_prefix(fd: int, header: Header, region: Region) -> bytes:
    """A NUL-terminated region (JSON, text) up to its first NUL, read in growing chunks
    (most hold a few bytes of a megabyte)."""
    chunk = 4096
    while True:
        data = read_region(fd, header, region, chunk)
        end = data.find(b"\0")
        if end >= 0 or chunk >= region.size:
            return data if end < 0 else data[:end]
        chunk *= 8


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite until every byte is written: on a filling disk a write comes back short
    first, and only the next one says why (ENOSPC)."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _commit(fd: int, offset: int, data: bytes) -> None:
    _write_all(fd, data, offset)
    os.fsync(fd)


def recover(fd: int, header: Header) -> None:
    """Finish a journaled write that a crash interrupted (needs a writable fd)."""
    pending = _pending(fd, header)
    if pending is not None:
        _commit(fd, pending[0], pending[1])
    _commit(fd, header.journal_offset, b"\0" * 8)


def write_region(path: str, header: Header, region: Region, value: bytes) -> None:
    """Replace a region's content; refuse what does not fit and keep the old value."""
    if len(value) > region.size:
        raise FimError(
            f"Value for '{region.name}' is too large: {len(value)} bytes, "
            f"the region holds {region.size}"
        )
    data = value.ljust(region.size, b"\0")
    start = header.reserved_offset + region.offset
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise FimError(f"Cannot write image '{path}': {e.strerror}") from None
    recorded = False  # once the journal head is durable, the new value is the one read
    try:
        recover(fd, header)
        if len(data) > 1:
            entry = _JOURNAL_HEAD.pack(_JOURNAL_MAGIC, start, len(data), zlib.crc32(data))
            _write_all(fd, data, header.journal_offset + _JOURNAL_HEAD.size)
            os.fsync(fd)
            _commit(fd, header.journal_offset, entry)
            recorded = True
            _commit(fd, start, data)
            _commit(fd, header.journal_offset, b"\0" * 8)
        else:
            # A one-byte write is atomic by itself.
            _commit(fd, start, data)
    except OSError as e:
        # ENOSPC (a sparse copy of the image), EIO, EDQUOT: one line, and which value
        # stands. A half-written journal body has no valid head, so it is ignored.
        state = ("the new value is recorded in its journal and is the one read"
                 if recorded else "its old value stands")
        raise FimError(f"Cannot write the '{region.name}' setting of image '{path}': "
                       f"{e.strerror}; {state}") from None
    finally:
        os.close(fd)

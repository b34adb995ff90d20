"""The layer chain: `[u64 little-endian size][layer bytes]`, oldest first, to end of file.

Appending writes one element past the last complete one and fsyncs it; a process
killed in the middle leaves a torn last element, which readers skip (with one
warning) and the next append overwrites.
"""

from __future__ import annotations

import os
import struct

from fim.runtime.image.header import Header
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

_SIZE = struct.Struct("<Q")


@dataclass(frozen=True)
class Element:
    index: int
    offset: int  # of the layer bytes, after the size field
    size: int


@dataclass(frozen=True)
class Chain:
    elements: List[Element]
    end: int  # where the next element goes
    torn: Optional[int]  # bytes of an incomplete last element, if any


def scan(fd: int, header: Header) -> Chain:
    file_size = os.fstat(fd).st_size
    elements: List[Element] = []
    pos = header.chain_offset
    while pos < file_size:
        raw = os.pread(fd, _SIZE.size, pos)
        if len(raw) < _SIZE.size:
            break
        (size,) = _SIZE.unpack(raw)
        if size == 0 or pos + _SIZE.size + size > file_size:
            break
        elements.append(Element(len(elements), pos + _SIZE.size, size))
        pos += _SIZE.size + size
    torn = file_size - pos if pos < file_size else None
    return Chain(elements, pos, torn)


def append(path: str, header: Header, layer_path: str) -> Element:
    """Append a layer file as the new top element, durably."""
    fd = os.open(path, os.O_RDWR)
    try:
        chain = scan(fd, header)
        size = os.path.getsize(layer_path)
        # Size field last: until it is written the element reads as torn garbage
        # of zero size, never as a complete layer with missing bytes.
        os.ftruncate(fd, chain.end)
        pos = chain.end + _SIZE.size
        with open(layer_path, "rb") as src:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                os.pwrite(fd, block, pos)
                pos += len(block)
        os.fsync(fd)
        os.pwrite(fd, _SIZE.pack(size), chain.end)
        os.fsync(fd)
        return Element(len(chain.elements), chain.end + _SIZE.size, size)
    finally:
        os.close(fd)

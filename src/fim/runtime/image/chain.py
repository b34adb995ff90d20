"""The layer chain: `[u64 little-endian size][layer bytes]`, oldest first, to end of file.

Appending writes one element past the last complete one and fsyncs it; a process
killed in the middle leaves a torn last element, which readers skip (with one
warning) and the next append overwrites.
"""

from __future__ import annotations

import os
import struct
from errno import EIO

from fim.runtime.errors import FimError
from fim.runtime.image import digest
from fim.runtime.image.header import Header
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

_SIZE = struct.Struct("<Q")
_CHUNK = 1 << 20


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


def append(path: str, header: Header, layer_path: str, seal: bool = False) -> Element:
    """Append a layer file as the new top element, durably. A file with a digest
    trailer is hashed as it is copied and refused when it does not match; one without
    gets a trailer when `seal` (its format tolerates bytes after its own). Any OS
    error (a full disk, a quota, EIO) truncates the image back to where the chain
    ended: one FimError naming the image and the cause."""
    try:
        src = os.open(layer_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise FimError(f"Cannot read layer '{layer_path}': {e.strerror}") from None
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise FimError(f"Cannot write image '{path}': {e.strerror}; "
                           "the image is unchanged") from None
        try:
            return _append(fd, path, header, src, layer_path, seal)
        finally:
            os.close(fd)
    finally:
        os.close(src)


def _append(fd: int, path: str, header: Header, src: int, layer_path: str,
            seal: bool) -> Element:
    chain = scan(fd, header)
    old_size = os.fstat(fd).st_size
    reading = True
    try:
        size = os.fstat(src).st_size
        sealed = digest.trailer(src, 0, size)
        reading = False
        # Hashed only when there is a digest to check or to write.
        covered = (size if seal else 0) if sealed is None else min(sealed.covered, size)
        # Size field last: until it is written the element reads as torn garbage
        # of zero size, never as a complete layer with missing bytes.
        os.ftruncate(fd, chain.end)
        start = chain.end + _SIZE.size
        h = digest.hasher()
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        done = 0
        while done < size:
            reading = True
            got = os.preadv(src, [view[:min(_CHUNK, size - done)]], done)
            reading = False
            if got <= 0:
                raise OSError(EIO, "Input/output error (the layer file shrank)")
            if done < covered:
                h.update(view[:min(got, covered - done)])
            digest.write_all(fd, view[:got], start + done)
            done += got
        element = size
        if sealed is not None:
            if sealed.covered != size - digest.SIZE or h.digest() != sealed.sha256:
                raise FimError(f"Layer '{layer_path}' is damaged (its digest does not match); "
                               f"{_state(_undo(fd, chain.end), old_size != chain.end)}", 1)
        elif seal:
            digest.write_all(fd, digest.pack(size, h.digest()), start + size)
            element += digest.SIZE
        os.fsync(fd)
        digest.write_all(fd, _SIZE.pack(element), chain.end)
        os.fsync(fd)
        return Element(len(chain.elements), start, element)
    except OSError as e:
        what = f"reading '{layer_path}'" if reading else f"appending a layer to '{path}'"
        raise FimError(f"{e.strerror or type(e).__name__} while {what}; "
                       f"{_state(_undo(fd, chain.end), old_size != chain.end)}", 1) from None


def _state(undone: bool, torn: bool) -> str:
    if not undone:
        return "the image ends in an incomplete layer, which runs ignore"
    # The torn bytes of an earlier append were garbage: the next append drops them anyway.
    return "the image is as before, without its incomplete last layer" if torn else \
        "the image is unchanged"


def _undo(fd: int, end: int) -> bool:
    """Cut a failed append away (truncating needs no space); whether that worked."""
    try:
        os.ftruncate(fd, end)
        os.fsync(fd)
        return True
    except OSError:
        return False

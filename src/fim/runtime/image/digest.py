"""The digest trailer of a layer: what a layer's bytes were when it was made.

A sealed layer ends in 48 bytes, after the filesystem's own bytes (which its
mount tool reads through its superblock and never past):

    magic "FIMSUM01" | u64 covered: the bytes before the trailer | SHA-256 of them

A chain element and a layer file carry it alike. A layer without one (made by an
older fim, or by another tool) reads as `NONE`: it mounts unchecked, as before.
"""

from __future__ import annotations

import os
import struct

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union

MAGIC = b"FIMSUM01"
_TRAILER = struct.Struct("<8sQ32s")
SIZE = _TRAILER.size  # 48
_CHUNK = 1 << 20

OK = "ok"
DAMAGED = "damaged"
NONE = "no digest"


@dataclass(frozen=True)
class Trailer:
    covered: int  # bytes of the layer before the trailer
    sha256: bytes


def pack(covered: int, sha256: bytes) -> bytes:
    return _TRAILER.pack(MAGIC, covered, sha256)


def trailer(fd: int, offset: int, size: int) -> Optional[Trailer]:
    """The trailer of the layer at [offset, offset+size) of `fd`, None when it has none.
    A trailer whose magic is there but whose length is not its own is returned as it
    is: `check` calls that damaged (the magic at that place is no coincidence)."""
    if size < SIZE:
        return None
    raw = os.pread(fd, SIZE, offset + size - SIZE)
    if len(raw) != SIZE or not raw.startswith(MAGIC):
        return None
    _, covered, sha = _TRAILER.unpack(raw)
    return Trailer(covered, sha)


def hasher() -> Any:
    # hashlib costs milliseconds to import (OpenSSL): only runs that hash pay it.
    import hashlib

    return hashlib.sha256()


def sha256_of(fd: int, offset: int, length: int) -> bytes:
    """SHA-256 of bytes [offset, offset+length) of `fd`, read through one buffer; a
    file shorter than that raises OSError (EIO: the bytes are not there)."""
    h = hasher()
    buf = bytearray(min(_CHUNK, max(length, 1)))
    view = memoryview(buf)
    end = offset + length
    while offset < end:
        want = min(len(buf), end - offset)
        got = os.preadv(fd, [view[:want]], offset)
        if got <= 0:
            raise OSError(5, "Input/output error (the file ends before the layer does)")
        h.update(view[:got])
        offset += got
    return bytes(h.digest())


def check(fd: int, offset: int, size: int) -> str:
    """OK when the layer at [offset, offset+size) matches its trailer, DAMAGED when it
    does not (or its trailer is damaged), NONE when it has no trailer."""
    found = trailer(fd, offset, size)
    if found is None:
        return NONE
    if found.covered != size - SIZE:
        return DAMAGED
    return OK if sha256_of(fd, offset, found.covered) == found.sha256 else DAMAGED


def write_all(fd: int, data: Union[bytes, memoryview], offset: int) -> None:
    """pwrite until every byte is written: on a filling disk a write comes back short
    first, and only the next one says why (ENOSPC)."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def seal(path: str) -> None:
    """Append the trailer to the layer file `path` (which has none yet); the caller
    makes it durable."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        sha = sha256_of(fd, 0, size)
        write_all(fd, pack(size, sha), size)
    finally:
        os.close(fd)

"""A layer blob read as a tar stream: decompressed (gzip, zstd or none, told by its
first bytes, not by the media type, which tools get wrong), its bytes and its tar
hashed as they pass, and checked against the digests that name them once read to
the end."""

from __future__ import annotations

import hashlib
import zlib
from typing import IO, Any, Callable, Optional, cast

from fim.builder.oci.source import LayerRef, Store
from fim.runtime.errors import FimError

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20

Progress = Callable[[int], None]  # bytes of the blob read so far


def _hasher(digest: str) -> Optional[Any]:
    alg = digest.partition(":")[0]
    return hashlib.new(alg) if digest else None


class _Counted:
    """The raw blob: hashed and counted as it is read."""

    def __init__(self, f: IO[bytes], digest: str, progress: Optional[Progress]) -> None:
        self.f = f
        self.hash = _hasher(digest)
        self.done = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n is not None and n >= 0 else _CHUNK)
        if self.hash is not None:
            self.hash.update(data)
        self.done += len(data)
        if self.progress is not None and data:
            self.progress(self.done)
        return data


class _Gunzip:
    """gzip members one after another (what `gzip` and pigz write), through zlib."""

    def __init__(self, raw: _Counted, head: bytes) -> None:
        self.raw = raw
        self.z = zlib.decompressobj(31)
        self.buf = head
        self.fresh = False  # a member has begun and not ended
        self.ended = False

    def read(self, n: int) -> bytes:
        while not self.ended:
            if not self.buf:
                self.buf = self.raw.read(_CHUNK)
                if not self.buf:
                    if self.fresh:
                        raise EOFError("the compressed stream ends early")
                    self.ended = True
                    break
            self.fresh = True
            out = self.z.decompress(self.buf, n)
            if self.z.eof:
                self.buf = self.z.unused_data
                self.z = zlib.decompressobj(31)
                self.fresh = False
            else:
                self.buf = self.z.unconsumed_tail
            if out:
                return out
        return b""


class LayerStream:
    """The uncompressed tar of one layer, read forward (tarfile's `r|` mode reads it)."""

    def __init__(self, store: Store, ref: LayerRef, label: str,
                 progress: Optional[Progress] = None) -> None:
        self.ref = ref
        self.label = label
        self.file = store.open(ref.name)
        self.raw = _Counted(self.file, ref.digest, progress)
        self.tar_hash = _hasher(ref.diff_id)
        head = self.raw.read(4)
        self.inner: Any
        if head.startswith(_GZIP):
            self.inner = _Gunzip(self.raw, head)
            self.pending = b""
        elif head.startswith(_ZSTD):
            import zstandard

            self.inner = zstandard.ZstdDecompressor().stream_reader(
                cast(Any, _Prefixed(head, self.raw)), read_across_frames=True)
            self.pending = b""
        else:
            self.inner = self.raw
            self.pending = head

    def read(self, n: int = -1) -> bytes:
        n = n if n is not None and n >= 0 else _CHUNK
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
        else:
            data = self.inner.read(n)
        if self.tar_hash is not None:
            self.tar_hash.update(data)
        return data

    def finish(self) -> None:
        """Read what tarfile left (the archive's padding) and check both digests."""
        while self.read(_CHUNK):
            pass
        while self.raw.read(_CHUNK):
            pass  # bytes after the compressed stream still belong to the blob
        self.check_blob()
        if self.tar_hash is not None and self.tar_hash.hexdigest() != \
                self.ref.diff_id.partition(":")[2]:
            raise FimError(f"{self.what()}: its uncompressed tar does not match the config's "
                           f"diff_id {self.ref.diff_id} (the image is damaged or was altered)", 1)

    def check_blob(self) -> None:
        if self.raw.hash is not None and self.raw.hash.hexdigest() != \
                self.ref.digest.partition(":")[2]:
            raise FimError(f"{self.what()}: the blob does not match its digest "
                           f"{self.ref.digest} (damaged, truncated or altered)", 1)

    def drain_and_check(self) -> None:
        """After a failure to read the tar: the blob's own digest names the cause when
        the blob is damaged; otherwise the caller's error stands."""
        try:
            while self.raw.read(_CHUNK):
                pass
        except OSError:
            return
        self.check_blob()

    def what(self) -> str:
        named = self.ref.digest or self.ref.name
        return f"'{self.label}': layer {self.ref.index} ({named})"

    def close(self) -> None:
        self.file.close()


class _Prefixed:
    """A file whose first bytes were already read: given back first."""

    def __init__(self, head: bytes, raw: _Counted) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        return self.raw.read(n)

"""The runtime payload: the runtime package and embedded tools, as a simple archive.

`FIMPAY01`, then records `<u16 path length><u32 mode><u32 data length>`, path
(UTF-8), zlib-compressed data. The image's bootstrap extracts it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

MAGIC = b"FIMPAY01"

Entry = Tuple[str, int, bytes]  # relative path, mode, content


def pack(entries: Iterable[Entry]) -> bytes:
    out = [MAGIC]
    for name, mode, data in entries:
        raw = name.encode("utf-8")
        packed = zlib.compress(data, 9)
        out.append(struct.pack("<HII", len(raw), mode & 0o7777, len(packed)))
        out += [raw, packed]
    return b"".join(out)


def unpack(blob: bytes) -> List[Entry]:
    """The entries of a payload, read by the image's own bootstrap code."""
    from fim.runtime.bootstrap import records

    return list(records(blob))


# Files of the runtime package other than its Python code, run as programs inside
# the container: the portal's client (a shell script, for images without Python).
PROGRAMS = ("portal/fim_portal.sh",)


def runtime_entries() -> List[Entry]:
    """The runtime package's Python files and PROGRAMS, as they are in this installation."""
    import fim.runtime

    root = Path(fim.runtime.__file__).parent
    entries: List[Entry] = [("fim/__init__.py", 0o644, b"")]
    for path in sorted(root.rglob("*.py")):
        rel = "fim/runtime/" + path.relative_to(root).as_posix()
        entries.append((rel, 0o644, path.read_bytes()))
    for name in PROGRAMS:
        entries.append(("fim/runtime/" + name, 0o755, (root / name).read_bytes()))
    return entries


def file_entry(name: str, path: str) -> Entry:
    with open(path, "rb") as f:
        return name, os.stat(path).st_mode, f.read()


def read_entry(blob: bytes, name: str) -> Optional[bytes]:
    """The content of the entry `name` of a payload, the others skipped undecompressed
    (`fim inspect` reads build.json without unpacking the embedded tools)."""
    if blob[:len(MAGIC)] != MAGIC:
        return None
    pos = len(MAGIC)
    wanted = name.encode("utf-8")
    while pos + 10 <= len(blob):
        plen, _mode, clen = struct.unpack_from("<HII", blob, pos)
        pos += 10
        if blob[pos:pos + plen] == wanted:
            try:
                return zlib.decompress(blob[pos + plen:pos + plen + clen])
            except zlib.error:
                return None
        pos += plen + clen
    return None

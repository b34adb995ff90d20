"""Read the container's root as the overlay will show it, without mounting it.

Branches are host directories, the writable upper first, then the layers from
the newest down. A character device 0/0 is a whiteout; a directory with an
`overlay.opaque` xattr hides the same directory in the branches below it.
"""

from __future__ import annotations

import os
import stat

from fim.runtime.overlays.whiteouts import is_opaque, is_whiteout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

_MAX_LINKS = 40


def _step(dirs: Sequence[str], name: str) -> Tuple[Optional[os.stat_result], List[str]]:
    """Stat of `name` as merged from `dirs`, and the dirs backing it if a directory."""
    for i, d in enumerate(dirs):
        path = os.path.join(d, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if is_whiteout(st):
            return None, []
        if not stat.S_ISDIR(st.st_mode):
            return st, [path]
        below: List[str] = [path]
        for lower in dirs[i + 1:]:
            candidate = os.path.join(lower, name)
            try:
                lst = os.lstat(candidate)
            except OSError:
                continue
            if not stat.S_ISDIR(lst.st_mode):
                break
            # A directory's opacity is read once a directory lies below it, not
            # before: on a layer each xattr read is a round trip to its FUSE daemon,
            # which answers "none" uncached.
            if is_opaque(below[-1]):
                break
            below.append(candidate)
        return st, below
    return None, []


def resolve(branches: Sequence[str], path: str) -> Optional[str]:
    """Host path of what the container sees at absolute `path`, following its symlinks."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    i = 0
    dirs: List[str] = list(branches)
    done: List[str] = []
    while i < len(parts):
        name = parts[i]
        if name == "..":
            parts = done[:-1] + parts[i + 1:]
            done, dirs, i = [], list(branches), 0
            continue
        st, below = _step(dirs, name)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return None
            target = os.readlink(below[0])
            base = [] if target.startswith("/") else done
            parts = base + [p for p in target.split("/") if p not in ("", ".")] + parts[i + 1:]
            done, dirs, i = [], list(branches), 0
            continue
        if i == len(parts) - 1:
            return below[0]
        if not stat.S_ISDIR(st.st_mode):
            return None
        done.append(name)
        dirs = below
        i += 1
    return branches[0] if branches else None


def read_text(branches: Sequence[str], path: str) -> Optional[str]:
    host = resolve(branches, path)
    if host is None or not os.path.isfile(host):
        return None
    try:
        with open(host, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def which(branches: Sequence[str], program: str, search_path: str) -> Optional[str]:
    """Host path of the file execvp would run for `program` inside the container."""
    candidates = [program] if "/" in program else [
        os.path.join(d, program) for d in search_path.split(":") if d
    ]
    for candidate in candidates:
        host = resolve(branches, candidate if candidate.startswith("/") else "/" + candidate)
        if host is not None and os.path.isfile(host):
            return host
    return None

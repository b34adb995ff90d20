"""The name index: per directory of SOURCE, its names by folded form.

A directory's table {folded name: real names, sorted} is validated against the
directory's mtime/ctime/size/inode, so a change behind the mount's back rebuilds it; a
change through the mount updates it in place (`cache_before`, the change, `cache_after`)
and so saves the rescan. An exact name never needs a table: one lstat() finds it.
"""

from __future__ import annotations

import _thread
import os
from bisect import insort
from errno import EEXIST, ENOENT, ESTALE

from fim.runtime.casefold.protocol import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Tuple

    Table = Dict[str, List[str]]
    Found = Tuple[str, str, os.stat_result]  # real name, path, lstat
    DirKey = Tuple[int, int, int, int]

MAX_DIRS = 4096  # directories whose folded names are cached
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def join(parent: str, name: str) -> str:
    return name if parent == "." else parent + "/" + name


def dir_key(st: os.stat_result) -> DirKey:
    """What changes when a directory's entries change behind our back."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def fold(names: Iterable[str]) -> Table:
    table: Table = {}
    for name in names:
        key = name.casefold()
        same = table.get(key)
        if same is None:
            table[key] = [name]
        else:
            insort(same, name)
    return table


class NameIndex:
    """The folded names of SOURCE's directories (paths relative to SOURCE's `fd`)."""

    __slots__ = ("fd", "dirs", "lock")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # Oldest first: insertion order is the eviction order.
        self.dirs: Dict[str, Tuple[DirKey, Table]] = {}
        # Only for changing `dirs`: readers take a table without it (a dict get is atomic).
        self.lock = _thread.allocate_lock()

    def lstat(self, path: str) -> os.stat_result:
        return os.stat(path, dir_fd=self.fd, follow_symlinks=False)

    def table(self, parent: str) -> Table:
        """{folded name: real names} of the directory `parent`, rebuilt when it changed."""
        try:
            key = dir_key(self.lstat(parent))
        except FileNotFoundError:
            raise fail(ESTALE) from None  # the directory went away behind our back
        cached = self.dirs.get(parent)
        if cached is not None and cached[0] == key:
            return cached[1]
        fd = os.open(parent, DIR_FLAGS, dir_fd=self.fd)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        table = fold(names)
        self.store(parent, key, table)  # with the key from before: a change meanwhile shows
        return table

    def store(self, parent: str, key: DirKey, table: Table) -> None:
        with self.lock:
            dirs = self.dirs
            dirs.pop(parent, None)
            dirs[parent] = (key, table)
            if len(dirs) > MAX_DIRS:
                del dirs[next(iter(dirs))]

    def cache_before(self, parent: str) -> Optional[Table]:
        """Before a change of `parent` through the mount: its cached table if still true
        (to be updated by `cache_after`), else None with the stale table dropped."""
        cached = self.dirs.get(parent)
        if cached is None:
            return None
        if cached[0] == dir_key(self.lstat(parent)):
            return cached[1]
        with self.lock:
            self.dirs.pop(parent, None)
        return None

    def cache_after(self, parent: str, table: Optional[Table], add: Optional[str] = None,
                    remove: Optional[str] = None) -> None:
        if table is None:
            return
        if remove is not None:
            folded = remove.casefold()
            same = table.get(folded)
            if same is not None and remove in same:
                same.remove(remove)
                if not same:
                    del table[folded]
        if add is not None:
            folded = add.casefold()
            same = table.get(folded)
            if same is None:
                table[folded] = [add]
            elif add not in same:
                insort(same, add)
        try:
            key = dir_key(self.lstat(parent))
        except OSError:
            return
        self.store(parent, key, table)

    def forget_dirs(self, path: str) -> None:
        """Drop the cached tables of `path` and every directory under it."""
        prefix = path + "/"
        with self.lock:
            for key in [k for k in self.dirs if k == path or k.startswith(prefix)]:
                del self.dirs[key]

    def find(self, parent: str, name: str) -> Optional[Found]:
        """(real name, path, lstat) of `name` in `parent`: the exact name, else the first
        real name folding alike in sorted order; None when there is none."""
        path = join(parent, name)
        try:
            return name, path, self.lstat(path)
        except FileNotFoundError:
            pass
        for real in self.table(parent).get(name.casefold(), ()):
            if real != name:
                path = join(parent, real)
                try:
                    return real, path, self.lstat(path)
                except FileNotFoundError:
                    continue
        return None

    def resolve(self, parent: str, name: str) -> Found:
        found = self.find(parent, name)
        if found is None:
            raise fail(ENOENT)
        return found

    def fresh(self, parent: str, name: str) -> Tuple[str, Optional[Table]]:
        """Before creating `name`: its path, and the table to update; EEXIST if any name
        folding alike exists."""
        if self.find(parent, name) is not None:
            raise fail(EEXIST)
        return join(parent, name), self.cache_before(parent)

"""The node table: the inodes the kernel holds, by nodeid, with their paths in SOURCE.

The node of exact names is one per file; a lookup by another spelling gets a node per
file and spelling, so the kernel sees `README.txt` and `readme.txt` as two inodes.
Unlinks and renames rewrite the paths (of everything under a directory too); FORGET
frees.

What makes two paths one file is not the inode number alone: fuse-overlayfs passes
each layer's numbers through, and they repeat across layers (hundreds in one committed
Wine image), as on any filesystem that numbers from 1. So a file is its path
(`file_key`), and renames carry the key along; only a file with other hard links is
known by (st_dev, st_ino), and a second path is taken for another name of it only
when its stat agrees with the first path's (`same_file`), otherwise it is a
different file with the same number.
"""

from __future__ import annotations

import _thread
import os
from errno import ESTALE

from fim.runtime.casefold.protocol import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

S_IFMT = 0o170000
S_IFDIR = 0o040000
MAX_PATHS = 8  # names remembered per node (hard links)
ROOT = 1  # FUSE_ROOT_ID: SOURCE itself, never forgotten
PATH = "path"  # the first field of a key that is a path


def file_key(path: str, st: os.stat_result) -> Tuple[Any, ...]:
    """What identifies the file `st` at `path`: (st_dev, st_ino) for a file with other
    hard links (the one case where two paths are one file), else (PATH, path)."""
    if st.st_nlink > 1 and st.st_mode & S_IFMT != S_IFDIR:
        return (st.st_dev, st.st_ino)
    return (PATH, path)


def _stamp(st: os.stat_result) -> Tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


class Node:
    """An inode the kernel holds: its paths (hard links: the latest first; none once
    unlinked), its identity, and how many lookups the kernel has not forgotten.

    `key` is the file's `file_key` for the node of exact names, with the spelling
    added for a node reached by another spelling (`exact` false). `file` is
    (st_dev, st_ino), by which the nodes of other spellings are found to invalidate
    them: over-matching there (a repeated number) costs an invalidation, no more."""

    __slots__ = ("nodeid", "paths", "key", "file", "kind", "exact", "nlookup", "backing",
                 "opens")

    def __init__(self, nodeid: int, path: str, key: Tuple[Any, ...], file: Tuple[int, int],
                 kind: int, exact: bool) -> None:
        self.nodeid = nodeid
        self.paths = [path]
        self.key = key
        self.file = file
        self.kind = kind
        self.exact = exact
        self.nlookup = 1
        self.backing = 0  # the kernel's id of its backing file while opened in passthrough
        self.opens = 0  # passthrough opens


class NodeTable:
    """Nodes by nodeid, by key, and per file its nodes of other spellings (`aliases`).

    Changed under `lock`, which handlers hold across a change of SOURCE's namespace and
    the table's update, so that the two change as one; `gen` counts unlinks and renames,
    so that a lookup resolved outside the lock sees whether to resolve again under it."""

    __slots__ = ("ids", "keys", "aliases", "spellings", "next_id", "gen", "lock",
                 "forget_dirs", "lstat", "changed")

    def __init__(self, root: os.stat_result, forget_dirs: Callable[[str], None],
                 lstat: Callable[[str], os.stat_result]) -> None:
        node = Node(ROOT, ".", (PATH, "."), (root.st_dev, root.st_ino), S_IFDIR, True)
        self.ids: Dict[int, Node] = {ROOT: node}
        self.keys: Dict[Tuple[Any, ...], int] = {node.key: ROOT}
        self.aliases: Dict[Tuple[int, int], List[int]] = {}  # (dev, ino) -> other spellings
        # path -> its nodes of other spellings: found by path too, since the number of
        # a path changes when a FUSE overlay copies its file up.
        self.spellings: Dict[str, List[int]] = {}
        self.next_id = ROOT + 1
        self.gen = 0  # bumped by every unlink and rename, under the lock
        self.lock = _thread.allocate_lock()
        # Told of every directory whose paths went away (the name index's tables).
        self.forget_dirs = forget_dirs
        self.lstat = lstat  # SOURCE's, relative paths
        # Nodes whose paths an unlink or rename changed, for the handler to invalidate
        # in the kernel once it has let go of the lock (`take_changed`).
        self.changed: List[Node] = []

    def node(self, nodeid: int) -> Node:
        node = self.ids.get(nodeid)
        if node is None:
            raise fail(ESTALE)
        return node

    def path(self, nodeid: int) -> str:
        try:
            return self.node(nodeid).paths[0]
        except IndexError:
            # Unlinked: the kernel walks the path again (LOOKUP_REVAL) on ESTALE, which
            # also drops an entry of another spelling still cached for it.
            raise fail(ESTALE) from None

    def remember(self, path: str, st: os.stat_result, spelling: Optional[str]) -> Node:
        """The node for `path` (one more lookup): per file for exact names, per file and
        spelling for the others. Under the lock."""
        kind = st.st_mode & S_IFMT
        extra = () if spelling is None else (spelling,)
        key = file_key(path, st) + extra
        node = self._reuse(key, path, st, kind)
        if node is None and key[0] != PATH and key in self.keys:
            # The number is another file's: known by its path, as files without links.
            key = (PATH, path) + extra
            node = self._reuse(key, path, st, kind)
        if node is not None:
            return node
        nodeid = self.next_id
        self.next_id += 1
        node = Node(nodeid, path, key, (st.st_dev, st.st_ino), kind, spelling is None)
        self.ids[nodeid] = node
        self.keys[key] = nodeid
        if spelling is not None:
            self.aliases.setdefault(node.file, []).append(nodeid)
            self.spellings.setdefault(path, []).append(nodeid)
        return node

    def _reuse(self, key: Tuple[Any, ...], path: str, st: os.stat_result,
               kind: int) -> Optional[Node]:
        """The node `key` names, one lookup more, if it is the file `st` at `path`."""
        nodeid = self.keys.get(key)
        if nodeid is None:
            return None
        node = self.ids[nodeid]
        if node.kind != kind:
            self.drop(nodeid, node.nlookup, True)  # the name or number was reused
            return None
        paths = node.paths
        if key[0] != PATH and path not in paths and paths and not self.same_file(paths[0], st):
            return None
        node.nlookup += 1
        if not paths or paths[0] != path:
            before = paths[:]
            if path in paths:
                paths.remove(path)
            paths.insert(0, path)
            del paths[MAX_PATHS:]
            self._reindex(node, before)
        return node

    def _reindex(self, node: Node, before: List[str]) -> None:
        """The path index of a node of another spelling follows its paths."""
        if node.exact:
            return
        spellings = self.spellings
        for p in before:
            if p not in node.paths:
                listed = spellings.get(p)
                if listed is not None and node.nodeid in listed:
                    listed.remove(node.nodeid)
                    if not listed:
                        del spellings[p]
        for p in node.paths:
            if p not in before:
                spellings.setdefault(p, []).append(node.nodeid)

    def same_file(self, other: str, st: os.stat_result) -> bool:
        """Whether `other` is another name of the file `st` (a hard link), not a file
        that only shares its inode number."""
        try:
            return _stamp(self.lstat(other)) == _stamp(st)
        except OSError:
            return False

    def _unkey(self, node: Node) -> None:
        if self.keys.get(node.key) == node.nodeid:
            del self.keys[node.key]

    def _rekey(self, node: Node, path: str) -> None:
        """A node known by its path follows it to `path`; a node the new key named
        before is stale (its file was replaced) and loses it."""
        if node.key[0] != PATH:
            return
        self._unkey(node)
        node.key = (PATH, path) + node.key[2:]
        self.keys[node.key] = node.nodeid

    def drop(self, nodeid: int, count: int, detach: bool = False) -> None:
        """FORGET: `count` lookups fewer; the node goes at zero. Under the lock."""
        node = self.ids.get(nodeid)
        if node is None or nodeid == ROOT:
            return
        node.nlookup -= count
        if detach or node.nlookup <= 0:
            self._unkey(node)
            if not node.exact:
                others = self.aliases.get(node.file)
                if others is not None and nodeid in others:
                    others.remove(nodeid)
                    if not others:
                        del self.aliases[node.file]
                paths, node.paths = node.paths, []
                self._reindex(node, paths)
                node.paths = paths
        if node.nlookup <= 0:
            del self.ids[nodeid]

    def related(self, dev: int, ino: int, path: Optional[str] = None) -> List[Node]:
        """The nodes of one file: its exact node (by number, or by `path`) and those of
        other spellings (by number: a node of another file may be among them)."""
        nodes = []
        for key in ((dev, ino), (PATH, path)):
            nodeid = self.keys.get(key)
            if nodeid is not None:
                node = self.ids[nodeid]
                if node not in nodes:
                    nodes.append(node)
        spelled = self.spellings.get(path, []) if path is not None else []
        for nodeid in list(self.aliases.get((dev, ino), ())) + spelled:
            alias = self.ids.get(nodeid)
            if alias is not None and alias not in nodes:
                nodes.append(alias)
        return nodes

    def others(self, node: Node) -> List[Node]:
        """The other nodes of `node`'s file: by its number, and by each path of the file
        (its own, and its hard links' that its node of exact names knows)."""
        found: List[Node] = []
        paths: List[Optional[str]] = list(node.paths) or [None]
        i = 0
        while i < len(paths):
            for other in self.related(node.file[0], node.file[1], paths[i]):
                if other is not node and other not in found:
                    found.append(other)
                    if other.exact:
                        paths += [p for p in other.paths if p not in paths]
            i += 1
        return found

    def linked(self, source: str, path: str, st: os.stat_result) -> Node:
        """`path` is a new hard link of the file at `source`: the node of exact names of
        that file (made if the kernel holds none), one lookup more, from now on known
        by the file's number. Under the lock."""
        number = (st.st_dev, st.st_ino)
        nodeid = self.keys.get((PATH, source))
        if nodeid is None:
            nodeid = self.keys.get(number)
            if nodeid is not None and source not in self.ids[nodeid].paths:
                nodeid = None  # the number is another file's
        if nodeid is None:
            node = self.remember(path, st, None)
            if source not in node.paths:
                node.paths.append(source)
            return node
        node = self.ids[nodeid]
        if node.key[0] == PATH:
            if number in self.keys and self.keys[number] != nodeid:
                self.drop(self.keys[number], 0, True)  # a stale node of a reused number
            self._unkey(node)
            node.key = number
            self.keys[number] = nodeid
        node.nlookup += 1
        node.paths.insert(0, path)
        del node.paths[MAX_PATHS:]
        return node

    def take_changed(self) -> List[Node]:
        changed, self.changed = self.changed, []
        return changed

    def unlinked(self, path: str, st: os.stat_result) -> None:
        """`path` (of the file `st`) is gone. Under the lock."""
        for node in self.related(st.st_dev, st.st_ino, path):
            if path in node.paths:
                node.paths.remove(path)
                self._reindex(node, node.paths + [path])
                self.changed.append(node)
                if node.key[:2] == (PATH, path):
                    self._unkey(node)
                elif node.key[0] != PATH and len(node.paths) == 1 and st.st_nlink == 2:
                    # The last other link: known by its path again, as files without.
                    self._unkey(node)
                    node.key = (PATH, node.paths[0]) + node.key[2:]
                    if node.key not in self.keys:
                        self.keys[node.key] = node.nodeid
        if st.st_mode & S_IFMT == S_IFDIR:
            self.forget_dirs(path)

    def moved(self, old: str, new: str, st: os.stat_result,
              mover: Optional[Node] = None) -> None:
        """`old` is now `new`: the node whose entry the kernel moved (`mover`; None: every
        node of the file) follows, the file's other nodes lose `old` (their entries in the
        kernel are stale: ESTALE makes it look them up again), and for a directory every
        path under it follows. Under the lock."""
        for node in self.related(st.st_dev, st.st_ino, old):
            if old not in node.paths:
                continue
            self.changed.append(node)
            before = node.paths[:]
            if mover is None or node is mover:
                node.paths[:] = [new if p == old else p for p in node.paths]
                if node.key[:2] == (PATH, old):
                    self._rekey(node, new)
            else:
                node.paths.remove(old)
                if node.key[:2] == (PATH, old):
                    self._unkey(node)
            self._reindex(node, before)
        if st.st_mode & S_IFMT != S_IFDIR:
            return
        prefix = old + "/"
        cut = len(old)
        for node in list(self.ids.values()):
            paths = node.paths
            before = paths[:]
            for i, p in enumerate(paths):
                if p.startswith(prefix):
                    paths[i] = new + p[cut:]
            if paths != before:
                self._reindex(node, before)
            key = node.key
            if key[0] == PATH and key[1].startswith(prefix):
                self._rekey(node, new + key[1][cut:])
        self.forget_dirs(old)

    def kernel_node(self, path: str, st: os.stat_result, name: str,
                    real: str) -> Optional[Node]:
        """The node the kernel holds for `name` (resolved to `real`, at `path`)."""
        extra = () if name == real else (name,)
        for key in (file_key(path, st) + extra, (PATH, path) + extra):
            nodeid = self.keys.get(key)
            found = None if nodeid is None else self.ids.get(nodeid)
            if found is not None and path in found.paths:
                return found
        return None

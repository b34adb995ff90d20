"""The node table: the inodes the kernel holds, by nodeid, with their paths in SOURCE.

The node of exact names is one per file ((st_dev, st_ino)); a lookup by another spelling
gets a node per file and spelling, so the kernel sees `README.txt` and `readme.txt` as
two inodes. Unlinks and renames rewrite the paths (of everything under a directory too);
FORGET frees.
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


class Node:
    """An inode the kernel holds: its paths (hard links: the latest first; none once
    unlinked), its identity, and how many lookups the kernel has not forgotten.

    `key` is (st_dev, st_ino) for the node of exact names, (st_dev, st_ino, spelling) for
    a node reached by another spelling (`exact` false)."""

    __slots__ = ("nodeid", "paths", "key", "kind", "exact", "nlookup", "backing", "opens")

    def __init__(self, nodeid: int, path: str, key: Tuple[Any, ...], kind: int,
                 exact: bool) -> None:
        self.nodeid = nodeid
        self.paths = [path]
        self.key = key
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

    __slots__ = ("ids", "keys", "aliases", "next_id", "gen", "lock", "forget_dirs")

    def __init__(self, root: os.stat_result, forget_dirs: Callable[[str], None]) -> None:
        node = Node(ROOT, ".", (root.st_dev, root.st_ino), S_IFDIR, True)
        self.ids: Dict[int, Node] = {ROOT: node}
        self.keys: Dict[Tuple[Any, ...], int] = {node.key: ROOT}
        self.aliases: Dict[Tuple[int, int], List[int]] = {}  # (dev, ino) -> other spellings
        self.next_id = ROOT + 1
        self.gen = 0  # bumped by every unlink and rename, under the lock
        self.lock = _thread.allocate_lock()
        # Told of every directory whose paths went away (the name index's tables).
        self.forget_dirs = forget_dirs

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
        key: Tuple[Any, ...] = (st.st_dev, st.st_ino)
        if spelling is not None:
            key = (st.st_dev, st.st_ino, spelling)
        nodeid = self.keys.get(key)
        if nodeid is not None:
            node = self.ids[nodeid]
            if node.kind == kind:
                node.nlookup += 1
                paths = node.paths
                if not paths or paths[0] != path:
                    if path in paths:
                        paths.remove(path)
                    paths.insert(0, path)
                    del paths[MAX_PATHS:]
                return node
            self.drop(nodeid, node.nlookup, True)  # the inode number was reused
        nodeid = self.next_id
        self.next_id += 1
        node = Node(nodeid, path, key, kind, spelling is None)
        self.ids[nodeid] = node
        self.keys[key] = nodeid
        if spelling is not None:
            self.aliases.setdefault((st.st_dev, st.st_ino), []).append(nodeid)
        return node

    def drop(self, nodeid: int, count: int, detach: bool = False) -> None:
        """FORGET: `count` lookups fewer; the node goes at zero. Under the lock."""
        node = self.ids.get(nodeid)
        if node is None or nodeid == ROOT:
            return
        node.nlookup -= count
        if detach or node.nlookup <= 0:
            if self.keys.get(node.key) == nodeid:
                del self.keys[node.key]
            if not node.exact:
                file = node.key[:2]
                others = self.aliases.get(file)
                if others is not None and nodeid in others:
                    others.remove(nodeid)
                    if not others:
                        del self.aliases[file]
        if node.nlookup <= 0:
            del self.ids[nodeid]

    def related(self, dev: int, ino: int) -> List[Node]:
        """The nodes of one file: its exact node and those of other spellings."""
        nodes = []
        nodeid = self.keys.get((dev, ino))
        if nodeid is not None:
            nodes.append(self.ids[nodeid])
        for nodeid in list(self.aliases.get((dev, ino), ())):
            node = self.ids.get(nodeid)
            if node is not None:
                nodes.append(node)
        return nodes

    def unlinked(self, path: str, st: os.stat_result) -> None:
        """`path` (of the file `st`) is gone. Under the lock."""
        for node in self.related(st.st_dev, st.st_ino):
            if path in node.paths:
                node.paths.remove(path)
        if st.st_mode & S_IFMT == S_IFDIR:
            self.forget_dirs(path)

    def moved(self, old: str, new: str, st: os.stat_result,
              mover: Optional[Node] = None) -> None:
        """`old` is now `new`: the node whose entry the kernel moved (`mover`; None: every
        node of the file) follows, the file's other nodes lose `old` (their entries in the
        kernel are stale: ESTALE makes it look them up again), and for a directory every
        path under it follows. Under the lock."""
        for node in self.related(st.st_dev, st.st_ino):
            if mover is None or node is mover:
                node.paths[:] = [new if p == old else p for p in node.paths]
            elif old in node.paths:
                node.paths.remove(old)
        if st.st_mode & S_IFMT != S_IFDIR:
            return
        prefix = old + "/"
        cut = len(old)
        for node in self.ids.values():
            paths = node.paths
            for i, p in enumerate(paths):
                if p.startswith(prefix):
                    paths[i] = new + p[cut:]
        self.forget_dirs(old)

    def kernel_node(self, st: os.stat_result, name: str, real: str) -> Optional[Node]:
        """The node the kernel holds for `name` (resolved to `real`)."""
        key: Tuple[Any, ...] = (st.st_dev, st.st_ino)
        if name != real:
            key = (st.st_dev, st.st_ino, name)
        nodeid = self.keys.get(key)
        return None if nodeid is None else self.ids.get(nodeid)

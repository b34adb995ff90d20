"""The container's tree as the layers so far make it, without their bytes: for each
path its attributes and where its content is (a layer and a member of that layer's
tar). Hard links share one Inode. The conversion reads it to know what a layer hides,
what its implicit directories were, and what a hard link into a lower layer reaches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

DIR = "dir"
FILE = "file"
SYMLINK = "symlink"
CHAR = "char"
BLOCK = "block"
FIFO = "fifo"

NO_DATA = (-1, -1)
_MAX_LINKS = 40


@dataclass(frozen=True)
class Meta:
    """Attributes of an entry as the container sees it."""

    kind: str
    mode: int  # permission bits with setuid, setgid and sticky
    uid: int
    gid: int
    mtime: int
    xattrs: Tuple[Tuple[str, bytes], ...] = ()
    target: str = ""  # a symbolic link's target, as stored (absolute ones too)
    major: int = 0
    minor: int = 0
    size: int = 0


@dataclass(frozen=True)
class Inode:
    """A file with its attributes, shared by all its hard links; `data` is the member
    (layer number, ordinal in that layer's tar) whose bytes are its content."""

    number: int
    meta: Meta
    data: Tuple[int, int] = NO_DATA


ROOT_META = Meta(DIR, 0o755, 0, 0, 0)


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def ancestors(path: str) -> List[str]:
    """The directories above `path`, outermost first, without the root ("")."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class Tree:
    """Mutable while one build runs; owned by that build."""

    def __init__(self) -> None:
        self.nodes: Dict[str, Inode] = {"": Inode(0, ROOT_META)}
        self.kids: Dict[str, Set[str]] = {"": set()}
        self.paths_of: Dict[int, Set[str]] = {0: {""}}
        self._next = 1

    def number(self) -> int:
        self._next += 1
        return self._next

    def get(self, path: str) -> Optional[Inode]:
        return self.nodes.get(path)

    def remove(self, path: str) -> None:
        """`path` and everything below it."""
        if path not in self.nodes:
            return
        if path:
            self.kids[parent(path)].discard(path)
        todo = [path]
        while todo:
            p = todo.pop()
            node = self.nodes.pop(p)
            group = self.paths_of.get(node.number)
            if group is not None:
                group.discard(p)
                if not group:
                    del self.paths_of[node.number]
            todo.extend(self.kids.pop(p, ()))
        if path == "":
            self.nodes[""] = Inode(0, ROOT_META)
            self.kids[""] = set()
            self.paths_of[0] = {""}

    def clear(self, path: str) -> None:
        """What is below the directory `path`, not the directory itself."""
        for child in list(self.kids.get(path, ())):
            self.remove(child)

    def put(self, path: str, node: Inode) -> None:
        """`node` at `path`, whose parent exists as a directory; what was there goes,
        except that a directory over a directory keeps what is inside it."""
        old = self.nodes.get(path)
        if old is not None and not (old.meta.kind == DIR and node.meta.kind == DIR):
            self.remove(path)
            old = None
        if old is not None:
            self.paths_of[old.number].discard(path)
            if not self.paths_of[old.number]:
                del self.paths_of[old.number]
        self.nodes[path] = node
        self.paths_of.setdefault(node.number, set()).add(path)
        if path:
            self.kids[parent(path)].add(path)
        if node.meta.kind == DIR:
            self.kids.setdefault(path, set())

    def links(self, number: int) -> Set[str]:
        return self.paths_of.get(number, set())

    def items(self) -> Iterator[Tuple[str, Inode]]:
        return iter(sorted(self.nodes.items()))

    def resolve(self, path: str) -> Optional[str]:
        """The path `path` (absolute, as the container names it) leads to, its symbolic
        links followed inside the root (`..` stops at the root); None if missing."""
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: List[str] = []
        hops = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                done = done[:-1]
                continue
            here = "/".join(done + [name])
            node = self.nodes.get(here)
            if node is None:
                return None
            if node.meta.kind == SYMLINK:
                hops += 1
                if hops > _MAX_LINKS:
                    return None
                target = node.meta.target
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            done.append(name)
        return "/".join(done)

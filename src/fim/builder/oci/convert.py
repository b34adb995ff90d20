"""One OCI layer tar into the tar of one fim layer, which mksquashfs reads on its
standard input (`-tar`): nothing is unpacked to disk, and ownership, setuid bits,
device nodes and xattrs (trusted.* too) reach the layer without root.

Three steps per layer:
  scan   read the tar's headers (the blob checked against its digests), refuse
         what could leave the root: absolute names, `..`, names below a symbolic
         link or a file, hard links to nothing;
  plan   against the tree the layers below make (tree.py): OCI whiteouts become
         fim's deletion markers (`.wh.NAME`: a 0/0 character device; `.wh..wh..opq`:
         the xattr user.overlay.opaque=y on the directory), implicit directories get
         the attributes the container saw, a hard link to a file of a lower layer
         brings that file's whole link group into this layer;
  emit   the planned entries as a tar: directories first, then what has no data,
         then the files as the layers' tars deliver them, then the hard links.
"""

from __future__ import annotations

import base64
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Callable, Dict, List, Mapping, Optional, Set, Tuple, Type
from urllib.parse import unquote_to_bytes

from fim.builder.oci import tree as t
from fim.builder.oci.blob import LayerStream
from fim.runtime.errors import FimError
from fim.runtime.overlays.whiteouts import OPAQUE

WHITEOUT = "whiteout"
OPAQUE_DIR = "opaque"
LINK = "link"
_WH = ".wh."
_WH_OPAQUE = ".wh..wh..opq"
_WH_META = ".wh..wh."
# Bookkeeping of overlay filesystems: in a layer they would delete or redirect what
# the layers below hold. fim's own opaque marker is set from the OCI one only.
_OVERLAY_XATTRS = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")
_CAPTURE_MAX = 1 << 20
_WHITEOUT_META = t.Meta(t.CHAR, 0, 0, 0, 0)


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar, as scanned."""

    ordinal: int  # its place among the tar's members
    path: str  # relative to the root, "" for the root itself
    kind: str  # tree kinds, LINK, WHITEOUT (path: what it deletes) or OPAQUE_DIR
    meta: t.Meta
    link: str = ""  # LINK: the path it links to
    marker: str = ""  # WHITEOUT, OPAQUE_DIR: the marker's own name, for messages


@dataclass(frozen=True)
class Scanned:
    entries: List[Entry]
    captured: Dict[Tuple[int, int], bytes]  # small files the build reads (etc/passwd...)


@dataclass(frozen=True)
class Out:
    """One member of the tar fim writes."""

    path: str
    meta: t.Meta
    data: Tuple[int, int] = t.NO_DATA
    link: str = ""  # a hard link to this earlier path


@dataclass(frozen=True)
class Plan:
    root: t.Meta
    dirs: List[Out]
    plain: List[Out]  # symbolic links, devices, FIFOs, deletion markers
    files: List[Out]  # regular files, each content once
    links: List[Out]
    hides_below: bool  # an opaque root: nothing of the layers below shows
    skipped: List[str]  # device nodes left out (a builder that is not root)
    # What applying this layer does to the tree:
    removed: List[str] = field(default_factory=list)
    cleared: List[str] = field(default_factory=list)
    nodes: Dict[str, t.Inode] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.dirs or self.plain or self.files or self.links)


def _path(name: str, what: str, field_name: str = "entry") -> str:
    if name.startswith("/"):
        raise FimError(f"{what}: the {field_name} '{name}' is an absolute path; refused", 1)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FimError(f"{what}: the {field_name} '{name}' leaves the root with '..'; "
                       "refused", 1)
    return "/".join(parts)


def _xattrs(pax: Mapping[str, str]) -> Tuple[Tuple[str, bytes], ...]:
    found: Dict[str, bytes] = {}
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            found[key[13:]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote_to_bytes(key[17:]).decode("utf-8", "surrogateescape")
            try:
                found[name] = base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                continue
    return tuple(sorted((k, v) for k, v in found.items() if not k.startswith(_OVERLAY_XATTRS)))


def _kind(m: tarfile.TarInfo) -> Optional[str]:
    if m.isdir():
        return t.DIR
    if m.isreg():
        return t.FILE
    if m.issym():
        return t.SYMLINK
    if m.islnk():
        return LINK
    if m.ischr():
        return t.CHAR
    if m.isblk():
        return t.BLOCK
    if m.isfifo():
        return t.FIFO
    return None


def members(stream: LayerStream) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r|", encoding="utf-8",  # type: ignore[call-overload]
                        errors="surrogateescape")


def read_failure(stream: LayerStream, e: BaseException) -> FimError:
    """A tar that could not be read: the blob's digest says why when it is damaged."""
    stream.drain_and_check()
    return FimError(f"{stream.what()} is not a readable tar ({str(e) or type(e).__name__})", 1)


def _read_errors() -> Tuple[Type[BaseException], ...]:
    errors: List[Type[BaseException]] = [tarfile.TarError, EOFError, zlib.error, OSError,
                                         ValueError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def scan(stream: LayerStream, capture: Set[str]) -> Scanned:
    """The entries of a layer's tar; the blob read to its end and checked."""
    what = stream.what()
    entries: List[Entry] = []
    captured: Dict[Tuple[int, int], bytes] = {}
    layer = stream.ref.index
    try:
        with members(stream) as tar:
            for ordinal, m in enumerate(tar):
                entry = _entry(m, ordinal, what)
                if entry is None:
                    continue
                entries.append(entry)
                if entry.kind == t.FILE and entry.path in capture and m.size <= _CAPTURE_MAX:
                    f = tar.extractfile(m)
                    if f is not None:
                        captured[(layer, ordinal)] = f.read()
        stream.finish()
    except FimError:
        raise
    except _read_errors() as e:
        raise read_failure(stream, e) from None
    return Scanned(entries, captured)


def _entry(m: tarfile.TarInfo, ordinal: int, what: str) -> Optional[Entry]:
    kind = _kind(m)
    if kind is None:
        return None  # a GNU volume label and the like: no file
    path = _path(m.name, what)
    meta = t.Meta(kind if kind != LINK else t.FILE, m.mode & 0o7777, m.uid, m.gid,
                  int(m.mtime), _xattrs(m.pax_headers), m.linkname if kind == t.SYMLINK else "",
                  m.devmajor, m.devminor, m.size if kind == t.FILE else 0)
    base = path.rpartition("/")[2]
    if base == _WH_OPAQUE:
        return Entry(ordinal, t.parent(path), OPAQUE_DIR, meta, marker=path)
    if base.startswith(_WH_META):
        return None  # reserved for other uses of the whiteout prefix
    if base.startswith(_WH):
        name = base[len(_WH):]
        if name in ("", ".", ".."):
            raise FimError(f"{what}: the whiteout '{m.name}' names no entry; refused", 1)
        parent = t.parent(path)
        return Entry(ordinal, f"{parent}/{name}" if parent else name, WHITEOUT, meta,
                     marker=path)
    if path == "" and kind != t.DIR:
        raise FimError(f"{what}: the entry '{m.name}' would make the root directory a "
                       "file; refused", 1)
    link = _path(m.linkname, what, "hard link target") if kind == LINK else ""
    return Entry(ordinal, path, kind, meta, link)


class _Planner:
    """The plan of layer `number` over `below` (not changed here)."""

    def __init__(self, below: t.Tree, number: int, what: str, keep_devices: bool) -> None:
        self.below = below
        self.number = number
        self.what = what
        self.keep_devices = keep_devices
        self.layer: Dict[str, t.Inode] = {}
        self.gone: Set[str] = set()  # whiteouts: paths of the layers below deleted
        self.opaque: Set[str] = set()  # directories hiding those below
        self.skipped: List[str] = []
        self.root: Optional[t.Meta] = None

    def hidden(self, path: str) -> bool:
        """Whether this layer's markers hide `path` of the layers below."""
        if path in self.gone or "" in self.opaque:
            return True
        return any(a in self.gone or a in self.opaque for a in t.ancestors(path))

    def lower(self, path: str) -> Optional[t.Inode]:
        """`path` of the layers below, as this layer's markers leave it."""
        node = self.below.get(path)
        return None if node is None or self.hidden(path) else node

    def shadowed(self, path: str) -> bool:
        """Whether this layer hides `path` of below: an entry there, or one that is no
        directory above it."""
        for a in t.ancestors(path):
            node = self.layer.get(a)
            if node is not None and node.meta.kind != t.DIR:
                return True
        return path in self.layer

    def check_parents(self, path: str, name: str) -> None:
        for a in t.ancestors(path):
            node = self.layer.get(a) or self.lower(a)
            if node is None or node.meta.kind == t.DIR:
                continue
            if node.meta.kind == t.SYMLINK:
                raise FimError(f"{self.what}: the entry '{name}' goes through the symbolic "
                               f"link '{a}' (-> {node.meta.target}), which could lead it out "
                               "of the root; refused", 1)
            raise FimError(f"{self.what}: the entry '{name}' is below '{a}', which is not a "
                           "directory; refused", 1)

    def drop(self, path: str) -> None:
        """This layer's entry at `path` and what it had below it."""
        old = self.layer.pop(path, None)
        if old is not None and old.meta.kind == t.DIR:
            prefix = path + "/"
            for p in [p for p in self.layer if p.startswith(prefix)]:
                del self.layer[p]

    def markers(self, entries: List[Entry]) -> None:
        for e in entries:
            if e.kind == WHITEOUT:
                self.gone.add(e.path)
            elif e.kind == OPAQUE_DIR:
                self.opaque.add(e.path)

    def add(self, e: Entry) -> None:
        if e.kind in (WHITEOUT, OPAQUE_DIR):
            self.check_parents(e.marker, e.marker)
            return
        self.check_parents(e.path, e.path)
        if e.path == "":
            self.root = e.meta
            return
        if e.kind == LINK:
            self.link(e)
            return
        if e.kind in (t.CHAR, t.BLOCK) and (not self.keep_devices or
                                            (e.meta.major, e.meta.minor) == (0, 0)):
            # A 0/0 character device is a deletion marker in fim's layers.
            self.skipped.append(e.path)
            return
        old = self.layer.get(e.path)
        if not (e.kind == t.DIR and old is not None and old.meta.kind == t.DIR):
            self.drop(e.path)  # a second entry for a directory keeps what is in it
        data = (self.number, e.ordinal) if e.kind == t.FILE else t.NO_DATA
        self.layer[e.path] = t.Inode(self.below.number(), e.meta, data)

    def link(self, e: Entry) -> None:
        self.check_parents(e.link, e.link)
        target = self.layer.get(e.link)
        if target is None and not self.shadowed(e.link):
            target = self.lower(e.link)
        if target is None and e.link in self.skipped:
            self.skipped.append(e.path)
            return
        if target is None or target.meta.kind == t.DIR:
            raise FimError(f"{self.what}: the hard link '{e.path}' points to '{e.link}', "
                           "which is no file before it in this layer or below; refused", 1)
        self.drop(e.path)
        self.layer[e.path] = target

    def lower_groups(self) -> None:
        """A file of a lower layer that this layer links to comes up with every link
        it has that still shows: the kernel cannot link across layers."""
        numbers = {n.number for n in self.layer.values() if n.meta.kind != t.DIR}
        for number in sorted(numbers):
            for p in sorted(self.below.links(number)):
                if p not in self.layer and not self.hidden(p) and not self.shadowed(p):
                    self.layer[p] = self.below.nodes[p]

    def plan(self) -> Plan:
        for w in self.gone:
            node = self.layer.get(w)
            if node is not None and node.meta.kind == t.DIR:
                self.opaque.add(w)  # deleted and made again in this layer
        self.lower_groups()
        markers = []
        for w in sorted(self.gone):
            if w in self.layer or self.below.get(w) is None or self.shadowed(w):
                continue
            if any(a in self.gone or a in self.opaque for a in [""] + t.ancestors(w)):
                continue  # hidden with a directory above it
            markers.append(Out(w, _WHITEOUT_META))
        needed = {a for p in list(self.layer) + [o.path for o in markers] + sorted(self.opaque)
                  for a in t.ancestors(p) + [p] if a and a not in self.layer}
        needed -= {o.path for o in markers}
        for a in sorted(needed):
            node = self.lower(a)
            meta = node.meta if node is not None and node.meta.kind == t.DIR else t.ROOT_META
            # A directory the tar does not name: as the container saw it below.
            self.layer[a] = t.Inode(self.below.number(), meta)
        for o in self.opaque:
            if o and o in self.layer:
                node = self.layer[o]
                meta = _with_xattr(node.meta, OPAQUE, b"y")
                self.layer[o] = t.Inode(node.number, meta)
        root = self.root or self.below.nodes[""].meta
        return _outputs(root, self.layer, markers, "" in self.opaque, self.skipped,
                        removed=sorted(self.gone), cleared=sorted(self.opaque))


def _with_xattr(meta: t.Meta, name: str, value: bytes) -> t.Meta:
    xattrs = tuple(sorted([x for x in meta.xattrs if x[0] != name] + [(name, value)]))
    return t.Meta(meta.kind, meta.mode, meta.uid, meta.gid, meta.mtime, xattrs, meta.target,
                  meta.major, meta.minor, meta.size)


def _outputs(root: t.Meta, nodes: Dict[str, t.Inode], markers: List[Out], hides_below: bool,
             skipped: List[str], removed: List[str], cleared: List[str]) -> Plan:
    dirs, plain, files, links = [], list(markers), [], []
    first: Dict[int, str] = {}
    for path in sorted(nodes):
        node = nodes[path]
        if node.meta.kind == t.DIR:
            dirs.append(Out(path, node.meta))
        elif node.number in first:
            links.append(Out(path, node.meta, link=first[node.number]))
        else:
            first[node.number] = path
            if node.meta.kind == t.FILE:
                files.append(Out(path, node.meta, node.data))
            else:
                plain.append(Out(path, node.meta))
    files.sort(key=lambda o: o.data)
    return Plan(root, dirs, plain, files, links, hides_below, skipped, removed, cleared,
                dict(nodes))


def plan_layer(entries: List[Entry], below: t.Tree, number: int, what: str,
               keep_devices: bool) -> Plan:
    planner = _Planner(below, number, what, keep_devices)
    planner.markers(entries)
    for e in entries:
        planner.add(e)
    return planner.plan()


def apply(tree: t.Tree, plan: Plan) -> None:
    """The tree as it is with this layer on top."""
    if plan.hides_below:
        tree.remove("")
    for path in plan.removed:
        tree.remove(path)
    for path in plan.cleared:
        tree.clear(path)
    root = tree.nodes[""]
    tree.put("", t.Inode(root.number, plan.root))
    for path in sorted(plan.nodes):
        tree.put(path, plan.nodes[path])


def plan_tree(tree: t.Tree) -> Plan:
    """One layer holding the whole tree (`--squash`)."""
    nodes = {p: n for p, n in tree.items() if p}
    return _outputs(tree.nodes[""].meta, nodes, [], False, [], [], [])


def _tarinfo(out: Out) -> tarfile.TarInfo:
    info = tarfile.TarInfo(out.path)
    meta = out.meta
    info.mode = meta.mode
    info.uid, info.gid = meta.uid, meta.gid
    info.uname = info.gname = ""  # ids as they are, never looked up by name
    info.mtime = meta.mtime
    if out.link:
        info.type, info.linkname = tarfile.LNKTYPE, out.link
        return info
    info.type = {t.DIR: tarfile.DIRTYPE, t.FILE: tarfile.REGTYPE, t.SYMLINK: tarfile.SYMTYPE,
                 t.CHAR: tarfile.CHRTYPE, t.BLOCK: tarfile.BLKTYPE,
                 t.FIFO: tarfile.FIFOTYPE}[meta.kind]
    info.linkname = meta.target
    info.devmajor, info.devminor = meta.major, meta.minor
    info.size = meta.size if meta.kind == t.FILE else 0
    info.pax_headers = {f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")
                        for name, value in meta.xattrs}
    return info


Opener = Callable[[int], LayerStream]  # a layer's number -> its stream, from the start


def emit(plan: Plan, out: IO[bytes], open_layer: Opener) -> None:
    """Write the plan as a tar to `out`; file contents streamed from the layers."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for o in plan.dirs + plan.plain:
            tar.addfile(_tarinfo(o))
        by_layer: Dict[int, Dict[int, Out]] = {}
        for o in plan.files:
            by_layer.setdefault(o.data[0], {})[o.data[1]] = o
        for number in sorted(by_layer):
            _copy_files(tar, open_layer(number), by_layer[number])
        for o in plan.links:
            tar.addfile(_tarinfo(o))


def _copy_files(tar: tarfile.TarFile, stream: LayerStream, wanted: Dict[int, Out]) -> None:
    left = dict(wanted)
    try:
        try:
            with members(stream) as source:
                for ordinal, m in enumerate(source):
                    o = left.pop(ordinal, None)
                    if o is None:
                        continue
                    f = source.extractfile(m)
                    if f is None or m.size != o.meta.size:
                        raise FimError(f"{stream.what()} changed while it was read", 1)
                    tar.addfile(_tarinfo(o), f)
            stream.finish()
        except FimError:
            raise
        except BrokenPipeError:
            raise
        except _read_errors() as e:
            raise read_failure(stream, e) from None
    finally:
        stream.close()
    if left:
        raise FimError(f"{stream.what()} changed while it was read", 1)

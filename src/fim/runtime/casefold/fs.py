"""The filesystem: FUSE requests answered from SOURCE, names matched by case folding.

Paths are relative to SOURCE and used with the directory descriptor opened before the
mount (`dir_fd`), so SOURCE may even be the mount point itself. The final component is
never followed: lstat, O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, l*xattr.

Handlers take (worker, unique, nodeid, request length) and return the reply's payload,
or None when the request takes no reply (or they answered themselves); an OSError
becomes an error reply.

No notification ever waits on a lock: FUSE_NOTIFY_INVAL_ENTRY takes the directory's
lock, which callers hold while they wait for a serving thread, so every thread could end
up waiting there. Entries the kernel keeps for a name that went away through another
spelling are handled instead by their node: it loses that path, answers ESTALE, and the
kernel looks the name up again (LOOKUP_REVAL).
"""

from __future__ import annotations

import _thread
import fcntl
import os
import sys
from bisect import insort
from errno import EEXIST, EISDIR, ENOENT, EOPNOTSUPP, EPROTO, ERANGE, ESTALE

from fim.runtime.casefold import protocol as P
from fim.runtime.namespaces import _libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

    Table = Dict[str, List[str]]
    Found = Tuple[str, str, os.stat_result]
    Handler = Callable[["Worker", int, int, int], Optional[bytes]]

S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
S_ISGID = 0o2000
DT_DIR = 4
DT_REG = 8
DT_LNK = 10
DT_UNKNOWN = 0
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

TIMEOUT = 1  # seconds the kernel keeps an exact-name entry and its attributes
MAX_IO = 1 << 20  # max_write, and the largest read (max_pages = 256)
BUFFER = MAX_IO + 4096  # one request: headers plus the largest write
MAX_PATHS = 8  # names remembered per node (hard links)
MAX_DIRS = 4096  # directories whose folded names are cached
B = P.IN_SIZE  # where a request's body starts
# Requests about a node's own path: ENOENT there means the node went away behind our
# back, and ESTALE makes the kernel look its name up again instead of failing.
NODE_OPS = (P.GETATTR, P.SETATTR, P.READLINK, P.OPEN, P.OPENDIR, P.ACCESS, P.SETXATTR,
            P.GETXATTR, P.LISTXATTR, P.REMOVEXATTR)

# Kept from the caller's flags on OPEN/CREATE: O_DIRECT would need aligned buffers.
OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT
OPEN_ADD = os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

ENC = sys.getfilesystemencoding()
ERRORS = sys.getfilesystemencodeerrors()

READ_HEAD = P.READ_HEAD
TIMESPECS = P.TIMESPECS


def join(parent: str, name: str) -> str:
    return name if parent == "." else parent + "/" + name


def name_at(buf: bytearray, start: int, end: int) -> Tuple[str, int]:
    """The NUL-terminated name at `start`, and where the next field begins."""
    stop = buf.index(0, start, end)
    return buf[start:stop].decode(ENC, ERRORS), stop + 1


def dir_key(st: os.stat_result) -> Tuple[int, int, int, int]:
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


def fail(errno: int) -> OSError:
    return OSError(errno, os.strerror(errno))


_LongLong: Any = None


def longlong(value: int) -> Any:
    """A 64-bit C argument (off_t) for a libc call."""
    global _LongLong
    if _LongLong is None:
        import _ctypes

        class LongLong(_ctypes._SimpleCData):
            _type_ = "q"

        _LongLong = LongLong
    return _LongLong(value)


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


class Worker:
    """One serving thread's buffers: the request read from /dev/fuse, the reply of a READ."""

    __slots__ = ("buf", "mv", "obuf", "omv")

    def __init__(self) -> None:
        self.buf = bytearray(BUFFER)
        self.mv = memoryview(self.buf)
        self.obuf = bytearray(P.OUT_HEADER.size + MAX_IO)
        self.omv = memoryview(self.obuf)


class CaseFold:
    def __init__(self, source_fd: int, dev: int, source: str) -> None:
        self.fd = source_fd
        self.dev = dev
        proc = f"/proc/self/fd/{source_fd}"
        # l*xattr() take no dir_fd: reach SOURCE through its descriptor when /proc allows.
        self.xroot = proc if os.path.isdir(proc) else os.path.abspath(source)
        self.euid = os.geteuid()
        self.egid = os.getegid()
        st = os.fstat(source_fd)
        root = Node(1, ".", (st.st_dev, st.st_ino), S_IFDIR, True)
        self.nodes: Dict[int, Node] = {1: root}
        self.keys: Dict[Tuple[Any, ...], int] = {root.key: 1}
        self.aliases: Dict[Tuple[int, int], List[int]] = {}  # (dev, ino) -> other spellings
        self.next_id = 2
        self.gen = 0  # bumped by every unlink and rename, under the lock
        self.lock = _thread.allocate_lock()  # node table and changes of the namespace
        self.cache_lock = _thread.allocate_lock()
        self.dirs: Dict[str, Tuple[Tuple[int, int, int, int], Table]] = {}
        self.listings: Dict[int, Optional[List[bytes]]] = {}  # directory fh -> dirents
        self.calls: Dict[str, Callable[..., int]] = {}
        self.passthrough = False  # negotiated in INIT: file I/O done by the kernel itself
        self.backed: Dict[int, Node] = {}  # passthrough fh -> node

    def handlers(self) -> List[Optional[Handler]]:
        table: List[Optional[Handler]] = [None] * P.OPCODES
        for op, handler in (
            (P.LOOKUP, self.lookup), (P.FORGET, self.forget), (P.GETATTR, self.getattr),
            (P.SETATTR, self.setattr), (P.READLINK, self.readlink),
            (P.SYMLINK, self.symlink), (P.MKNOD, self.mknod), (P.MKDIR, self.mkdir),
            (P.UNLINK, self.unlink), (P.RMDIR, self.rmdir), (P.RENAME, self.rename),
            (P.RENAME2, self.rename2), (P.LINK, self.link), (P.OPEN, self.open),
            (P.READ, self.read), (P.WRITE, self.write), (P.STATFS, self.statfs),
            (P.RELEASE, self.release), (P.FSYNC, self.fsync), (P.SETXATTR, self.setxattr),
            (P.GETXATTR, self.getxattr), (P.LISTXATTR, self.listxattr),
            (P.REMOVEXATTR, self.removexattr), (P.FLUSH, self.flush), (P.INIT, self.init),
            (P.OPENDIR, self.opendir), (P.READDIR, self.readdir),
            (P.RELEASEDIR, self.releasedir), (P.FSYNCDIR, self.fsyncdir),
            (P.ACCESS, self.access), (P.CREATE, self.create), (P.INTERRUPT, self.interrupt),
            (P.DESTROY, self.destroy), (P.BATCH_FORGET, self.batch_forget),
            (P.FALLOCATE, self.fallocate), (P.LSEEK, self.lseek),
        ):
            table[op] = handler
        return table

    # -- SOURCE ---------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result:
        return os.stat(path, dir_fd=self.fd, follow_symlinks=False)

    def libc(self, name: str) -> Callable[..., int]:
        call = self.calls.get(name)
        if call is None:
            call = self.calls[name] = _libc(name)
        return call

    def own(self, parent: str, path: str, uid: int, gid: int) -> None:
        """Give a new entry to the caller, as a kernel filesystem would (root only)."""
        if self.euid != 0 or (uid == self.euid and gid == self.egid):
            return
        try:
            if self.lstat(parent).st_mode & S_ISGID:
                gid = -1  # the directory's group, already set by the kernel
            os.chown(path, uid, gid, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            pass

    # -- the folded-name cache --------------------------------------------------

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

    def store(self, parent: str, key: Tuple[int, int, int, int], table: Table) -> None:
        with self.cache_lock:
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
        with self.cache_lock:
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
        with self.cache_lock:
            for key in [k for k in self.dirs if k == path or k.startswith(prefix)]:
                del self.dirs[key]

    # -- name resolution --------------------------------------------------------

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

    # -- the node table ----------------------------------------------------------

    def node(self, nodeid: int) -> Node:
        node = self.nodes.get(nodeid)
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
            node = self.nodes[nodeid]
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
        self.nodes[nodeid] = node
        self.keys[key] = nodeid
        if spelling is not None:
            self.aliases.setdefault((st.st_dev, st.st_ino), []).append(nodeid)
        return node

    def drop(self, nodeid: int, count: int, detach: bool = False) -> None:
        """FORGET: `count` lookups fewer; the node goes at zero. Under the lock."""
        node = self.nodes.get(nodeid)
        if node is None or nodeid == 1:
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
            del self.nodes[nodeid]

    def related(self, dev: int, ino: int) -> List[Node]:
        """The nodes of one file: its exact node and those of other spellings."""
        nodes = []
        nodeid = self.keys.get((dev, ino))
        if nodeid is not None:
            nodes.append(self.nodes[nodeid])
        for nodeid in list(self.aliases.get((dev, ino), ())):
            node = self.nodes.get(nodeid)
            if node is not None:
                nodes.append(node)
        return nodes

    def unlinked(self, path: str, st: os.stat_result) -> None:
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
        path under it follows."""
        for node in self.related(st.st_dev, st.st_ino):
            if mover is None or node is mover:
                node.paths[:] = [new if p == old else p for p in node.paths]
            elif old in node.paths:
                node.paths.remove(old)
        if st.st_mode & S_IFMT != S_IFDIR:
            return
        prefix = old + "/"
        cut = len(old)
        for node in self.nodes.values():
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
        return None if nodeid is None else self.nodes.get(nodeid)

    def touched(self, nodeid: int) -> None:
        """After a change through `nodeid`: the kernel's other inodes of the same file (its
        other spellings) drop their attributes, and with them (AUTO_INVAL_DATA) stale pages.
        Sent before the reply: it takes no lock the request may hold."""
        if self.aliases:
            node = self.nodes.get(nodeid)
            if node is not None:
                self.touched_file(node.key[0], node.key[1], node)

    def touched_file(self, dev: int, ino: int, skip: Optional[Node] = None) -> None:
        if (dev, ino) not in self.aliases:
            return
        for node in self.related(dev, ino):
            if node is not skip:
                try:
                    os.write(self.dev, P.inval_inode(node.nodeid, -1))
                except OSError:
                    pass  # ENOENT: the kernel no longer holds it

    def entry(self, node: Node, st: os.stat_result) -> bytes:
        valid = TIMEOUT if node.exact else 0
        return P.ENTRY_OUT.pack(node.nodeid, 0, valid, valid, 0, 0, *P.attr(st))

    # -- requests ------------------------------------------------------------

    def init(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        major, minor, readahead, flags = P.INIT_IN.unpack_from(w.buf, B)
        if major < P.MAJOR:
            raise fail(EPROTO)
        if major > P.MAJOR:  # the kernel sends INIT again with ours
            return P.INIT_OUT.pack(P.MAJOR, P.MINOR, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        want = (P.ASYNC_READ | P.ATOMIC_O_TRUNC | P.BIG_WRITES | P.AUTO_INVAL_DATA
                | P.PARALLEL_DIROPS | P.MAX_PAGES | P.CACHE_SYMLINKS)
        flags2 = 0
        if flags & P.INIT_EXT and n >= B + P.INIT_IN.size + 4:
            flags2 = P.U32.unpack_from(w.buf, B + P.INIT_IN.size)[0]
        out2 = depth = 0
        if flags2 & P.PASSTHROUGH2 and self.can_pass():
            want |= P.INIT_EXT
            out2 = P.PASSTHROUGH2
            depth = 1  # backing files on a plain filesystem; overlayfs may still stack on us
            self.passthrough = True
        return P.INIT_OUT.pack(P.MAJOR, min(minor, P.MINOR), readahead, flags & want, 64, 48,
                               MAX_IO, 1, MAX_IO // 4096, 0, out2, depth)

    def can_pass(self) -> bool:
        """Root of the initial user namespace: only it may register backing files."""
        if self.euid != 0:
            return False
        try:
            with open("/proc/self/uid_map") as f:
                return f.read().split() == ["0", "0", "4294967295"]
        except OSError:
            return False

    def destroy(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return b""

    def interrupt(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return None  # requests are short; the interrupted one is answered as it ends

    def lookup(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        name = name_at(w.buf, B, n)[0]
        gen = self.gen
        real, path, st = self.resolve(self.path(nodeid), name)
        with self.lock:
            if gen != self.gen:  # a rename or unlink ran meanwhile: again, atomically
                real, path, st = self.resolve(self.path(nodeid), name)
            node = self.remember(path, st, None if real == name else name)
        return self.entry(node, st)

    def forget(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        (count,) = P.FORGET_IN.unpack_from(w.buf, B)
        with self.lock:
            self.drop(nodeid, count)
        return None

    def batch_forget(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        count = P.BATCH_FORGET_IN.unpack_from(w.buf, B)[0]
        one = P.FORGET_ONE
        start = B + P.BATCH_FORGET_IN.size
        with self.lock:
            for i in range(min(count, (n - start) // one.size)):
                forgotten, times = one.unpack_from(w.buf, start + i * one.size)
                self.drop(forgotten, times)
        return None

    def getattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        flags, _, fh = P.GETATTR_IN.unpack_from(w.buf, B)
        node = self.node(nodeid)
        st = os.fstat(fh) if flags & P.GETATTR_FH else self.lstat(self.path(nodeid))
        return P.ATTR_OUT.pack(TIMEOUT if node.exact else 0, 0, 0, *P.attr(st))

    def setattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        (valid, _, fh, size, _, atime, mtime, _, atimensec, mtimensec, _, mode, _, uid, gid,
         _) = P.SETATTR_IN.unpack_from(w.buf, B)
        node = self.node(nodeid)
        fd = fh if valid & P.FATTR_FH else -1
        path = "" if fd >= 0 else self.path(nodeid)
        if valid & P.FATTR_MODE:
            if fd >= 0:
                os.fchmod(fd, mode & 0o7777)
            elif node.kind == S_IFLNK:
                raise fail(EOPNOTSUPP)  # Linux has no mode on symlinks
            else:
                os.chmod(path, mode & 0o7777, dir_fd=self.fd)
        if valid & (P.FATTR_UID | P.FATTR_GID):
            new_uid = uid if valid & P.FATTR_UID else -1
            new_gid = gid if valid & P.FATTR_GID else -1
            if fd >= 0:
                os.fchown(fd, new_uid, new_gid)
            else:
                os.chown(path, new_uid, new_gid, dir_fd=self.fd, follow_symlinks=False)
        if valid & P.FATTR_SIZE:
            if fd >= 0:
                os.ftruncate(fd, size)
            else:
                file = os.open(path, os.O_WRONLY | OPEN_ADD, dir_fd=self.fd)
                try:
                    os.ftruncate(file, size)
                finally:
                    os.close(file)
        if valid & (P.FATTR_ATIME | P.FATTR_MTIME):
            self.utimens(fd, path, valid, atime, atimensec, mtime, mtimensec)
        st = os.fstat(fd) if fd >= 0 else self.lstat(path)
        self.touched(nodeid)
        return P.ATTR_OUT.pack(TIMEOUT if node.exact else 0, 0, 0, *P.attr(st))

    def utimens(self, fd: int, path: str, valid: int, atime: int, atimensec: int, mtime: int,
                mtimensec: int) -> None:
        if valid & P.FATTR_ATIME_NOW:
            atime, atimensec = 0, UTIME_NOW
        elif not valid & P.FATTR_ATIME:
            atime, atimensec = 0, UTIME_OMIT
        if valid & P.FATTR_MTIME_NOW:
            mtime, mtimensec = 0, UTIME_NOW
        elif not valid & P.FATTR_MTIME:
            mtime, mtimensec = 0, UTIME_OMIT
        times = TIMESPECS.pack(atime, atimensec, mtime, mtimensec)
        if fd >= 0:
            self.libc("futimens")(fd, times)
        else:
            self.libc("utimensat")(self.fd, os.fsencode(path), times, AT_SYMLINK_NOFOLLOW)

    def readlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return os.fsencode(os.readlink(self.path(nodeid), dir_fd=self.fd))

    def symlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        name, start = name_at(w.buf, B, n)
        target = name_at(w.buf, start, n)[0]
        uid, gid = P.IN_IDS.unpack_from(w.buf, 24)
        with self.lock:
            parent = self.path(nodeid)
            path, table = self.fresh(parent, name)
            os.symlink(target, path, dir_fd=self.fd)
            return self.created(parent, path, name, table, uid, gid)

    def mknod(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        mode, rdev, _, _ = P.MKNOD_IN.unpack_from(w.buf, B)
        name = name_at(w.buf, B + P.MKNOD_IN.size, n)[0]
        uid, gid = P.IN_IDS.unpack_from(w.buf, 24)
        with self.lock:
            parent = self.path(nodeid)
            path, table = self.fresh(parent, name)
            os.mknod(path, mode, P.decode_dev(rdev), dir_fd=self.fd)
            return self.created(parent, path, name, table, uid, gid)

    def mkdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        mode = P.MKDIR_IN.unpack_from(w.buf, B)[0]
        name = name_at(w.buf, B + P.MKDIR_IN.size, n)[0]
        uid, gid = P.IN_IDS.unpack_from(w.buf, 24)
        with self.lock:
            parent = self.path(nodeid)
            path, table = self.fresh(parent, name)
            os.mkdir(path, mode & 0o7777, dir_fd=self.fd)
            return self.created(parent, path, name, table, uid, gid)

    def created(self, parent: str, path: str, name: str, table: Optional[Table], uid: int,
                gid: int) -> bytes:
        """The entry for what was just made at `path`. Under the lock."""
        self.own(parent, path, uid, gid)
        st = self.lstat(path)
        self.cache_after(parent, table, add=name)
        return self.entry(self.remember(path, st, None), st)

    def link(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        old = P.LINK_IN.unpack_from(w.buf, B)[0]
        name = name_at(w.buf, B + P.LINK_IN.size, n)[0]
        with self.lock:
            source = self.path(old)
            parent = self.path(nodeid)
            path, table = self.fresh(parent, name)
            os.link(source, path, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
            st = self.lstat(path)
            self.cache_after(parent, table, add=name)
            node = self.remember(path, st, None)
        self.touched_file(st.st_dev, st.st_ino, node)
        return self.entry(node, st)

    def unlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return self.remove(w, nodeid, n, os.unlink)

    def rmdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return self.remove(w, nodeid, n, os.rmdir)

    def remove(self, w: Worker, nodeid: int, n: int, call: Callable[..., None]) -> bytes:
        name = name_at(w.buf, B, n)[0]
        with self.lock:
            parent = self.path(nodeid)
            real, path, st = self.resolve(parent, name)
            table = self.cache_before(parent)
            call(path, dir_fd=self.fd)
            self.gen += 1
            self.cache_after(parent, table, remove=real)
            self.unlinked(path, st)
        self.touched_file(st.st_dev, st.st_ino)
        return b""

    def rename(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        newdir = P.RENAME_IN.unpack_from(w.buf, B)[0]
        return self.move(w, nodeid, newdir, 0, B + P.RENAME_IN.size, n)

    def rename2(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        newdir, flags, _ = P.RENAME2_IN.unpack_from(w.buf, B)
        return self.move(w, nodeid, newdir, flags, B + P.RENAME2_IN.size, n)

    def move(self, w: Worker, olddir: int, newdir: int, flags: int, start: int,
             n: int) -> bytes:
        oldname, start = name_at(w.buf, start, n)
        newname = name_at(w.buf, start, n)[0]
        with self.lock:
            old_parent = self.path(olddir)
            new_parent = self.path(newdir)
            old_real, old_path, old_st = self.resolve(old_parent, oldname)
            target = self.find(new_parent, newname)
            dest = join(new_parent, newname)
            if target is not None and target[1] == old_path:
                # The same entry: a change of case, or nothing.
                if newname == old_real or flags & P.RENAME_EXCHANGE:
                    return b""
                table = self.cache_before(old_parent)
                os.rename(old_path, dest, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                self.gen += 1
                self.cache_after(old_parent, table, remove=old_real, add=newname)
                self.moved(old_path, dest, old_st, self.kernel_node(old_st, oldname, old_real))
            elif flags & P.RENAME_EXCHANGE:
                if target is None:
                    raise fail(ENOENT)
                self.exchange(old_parent, old_path, old_st, new_parent, target)
            else:
                if target is not None and flags & P.RENAME_NOREPLACE:
                    raise fail(EEXIST)
                self.replace(old_parent, old_real, old_path, old_st, new_parent, newname,
                             target, flags, self.kernel_node(old_st, oldname, old_real))
        self.touched_file(old_st.st_dev, old_st.st_ino)
        return b""

    def replace(self, old_parent: str, old_real: str, old_path: str, old_st: os.stat_result,
                new_parent: str, newname: str, target: Optional[Found], flags: int,
                mover: Optional[Node]) -> None:
        """rename(2) onto `newname`, or onto the entry folding alike (`target`), replacing
        it and then taking the spelling asked for. Under the lock."""
        old_table = self.cache_before(old_parent)
        new_table = old_table if new_parent == old_parent else self.cache_before(new_parent)
        dest = join(new_parent, newname)
        self.renameat(old_path, dest if target is None else target[1], flags)
        self.gen += 1
        if target is not None:
            self.unlinked(target[1], target[2])
            if target[0] != newname:
                try:
                    os.rename(target[1], dest, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                except OSError:
                    dest = target[1]
                    newname = target[0]
            self.cache_after(new_parent, new_table, remove=target[0])
        self.cache_after(old_parent, old_table, remove=old_real)
        self.cache_after(new_parent, new_table, add=newname)
        self.moved(old_path, dest, old_st, mover)

    def exchange(self, old_parent: str, old_path: str, old_st: os.stat_result,
                 new_parent: str, target: Found) -> None:
        """renameat2(RENAME_EXCHANGE): both names stay, their files swap. Under the lock."""
        old_table = self.cache_before(old_parent)
        new_table = self.cache_before(new_parent)
        self.renameat(old_path, target[1], P.RENAME_EXCHANGE)
        self.gen += 1
        swap = "\0"  # no path holds a NUL
        self.moved(old_path, swap, old_st)
        self.moved(target[1], old_path, target[2])
        self.moved(swap, target[1], old_st)
        self.cache_after(old_parent, old_table)
        self.cache_after(new_parent, new_table)

    def renameat(self, old: str, new: str, flags: int) -> None:
        if flags == 0:
            os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            self.libc("renameat2")(self.fd, os.fsencode(old), self.fd, os.fsencode(new), flags)

    def open(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        flags = P.OPEN_IN.unpack_from(w.buf, B)[0]
        node = self.node(nodeid)
        fd = os.open(self.path(nodeid), (flags & ~OPEN_STRIP) | OPEN_ADD, dir_fd=self.fd)
        if flags & os.O_TRUNC:
            self.touched(nodeid)
        return self.opened(node, fd)

    def opened(self, node: Node, fd: int) -> bytes:
        """fuse_open_out for `fd`: in passthrough when possible (files of exact names
        only: the other spellings' nodes go through here, so that their writes reach the
        invalidation of the exact node), else cached and kept across opens."""
        if (self.passthrough or node.backing) and node.exact and node.kind == S_IFREG:
            with self.lock:
                if not node.backing:
                    try:
                        node.backing = fcntl.ioctl(self.dev, P.BACKING_OPEN,
                                                   bytearray(P.BACKING_MAP.pack(fd, 0, 0)), True)
                    except OSError:
                        self.passthrough = False  # EPERM, ELOOP (a stacked SOURCE): cached I/O
                if node.backing:
                    node.opens += 1
                    self.backed[fd] = node
                    return P.OPEN_OUT.pack(fd, P.FOPEN_PASSTHROUGH | P.FOPEN_NOFLUSH,
                                           node.backing)
        keep = P.FOPEN_KEEP_CACHE if node.exact else 0
        return P.OPEN_OUT.pack(fd, keep | P.FOPEN_NOFLUSH, 0)

    def create(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        flags, mode, _, _ = P.CREATE_IN.unpack_from(w.buf, B)
        name = name_at(w.buf, B + P.CREATE_IN.size, n)[0]
        uid, gid = P.IN_IDS.unpack_from(w.buf, 24)
        with self.lock:
            parent = self.path(nodeid)
            found = self.find(parent, name)
            if found is not None:  # O_CREAT acts on the entry folding alike
                if flags & os.O_EXCL:
                    raise fail(EEXIST)
                real, path, st = found
                if st.st_mode & S_IFMT == S_IFDIR:
                    raise fail(EISDIR)
                fd = os.open(path, (flags & ~OPEN_STRIP) | OPEN_ADD, dir_fd=self.fd)
                node = self.remember(path, st, None if real == name else name)
            else:
                path = join(parent, name)
                table = self.cache_before(parent)
                fd = os.open(path, (flags & ~OPEN_STRIP) | OPEN_ADD | os.O_CREAT,
                             mode & 0o7777, dir_fd=self.fd)
                self.own(parent, path, uid, gid)
                self.cache_after(parent, table, add=name)
                node = None
        try:
            st = os.fstat(fd)
            if node is None:
                with self.lock:
                    node = self.remember(path, st, None)
        except BaseException:
            os.close(fd)
            raise
        if flags & os.O_TRUNC:
            self.touched(node.nodeid)
        return self.entry(node, st) + self.opened(node, fd)

    def read(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, size = READ_HEAD.unpack_from(w.buf, B)
        omv = w.omv
        got = os.preadv(fh, [omv[16:16 + min(size, MAX_IO)]], offset)
        P.OUT_HEADER.pack_into(w.obuf, 0, 16 + got, 0, unique)
        try:
            os.write(self.dev, omv[:16 + got])
        except OSError:
            pass  # interrupted and gone
        return None

    def write(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, size = READ_HEAD.unpack_from(w.buf, B)
        start = B + P.WRITE_IN.size
        written = os.pwrite(fh, w.mv[start:start + size], offset)
        if self.aliases:
            self.touched(nodeid)
        return P.WRITE_OUT.pack(written, 0)

    def fallocate(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, length, mode, _ = P.FALLOCATE_IN.unpack_from(w.buf, B)
        self.libc("fallocate")(fh, mode, longlong(offset), longlong(length))
        self.touched(nodeid)
        return b""

    def lseek(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, whence, _ = P.LSEEK_IN.unpack_from(w.buf, B)
        return P.LSEEK_OUT.pack(os.lseek(fh, offset, whence))

    def flush(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh = P.FLUSH_IN.unpack_from(w.buf, B)[0]
        os.close(os.dup(fh))  # what close() of the caller's descriptor would report
        return b""

    def release(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh = P.RELEASE_IN.unpack_from(w.buf, B)[0]
        node = self.backed.pop(fh, None)
        os.close(fh)
        if node is not None:
            with self.lock:
                node.opens -= 1
                if node.opens <= 0 and node.backing:
                    try:
                        fcntl.ioctl(self.dev, P.BACKING_CLOSE, P.U32.pack(node.backing))
                    except OSError:
                        pass
                    node.backing = 0
        return b""

    def fsync(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, flags, _ = P.FSYNC_IN.unpack_from(w.buf, B)
        if flags & P.FSYNC_FDATASYNC:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return b""

    def statfs(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        s = os.statvfs(self.fd)
        return P.STATFS_OUT.pack(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree,
                                 s.f_bsize, s.f_namemax, s.f_frsize, 0)

    def access(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        self.lstat(self.path(nodeid))  # permissions: the kernel's (default_permissions)
        return b""

    # -- extended attributes ----------------------------------------------------

    def xpath(self, nodeid: int) -> str:
        return self.xroot + "/" + self.path(nodeid)

    def setxattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        size, flags = P.SETXATTR_IN.unpack_from(w.buf, B)
        name, start = name_at(w.buf, B + P.SETXATTR_IN.size, n)
        value = bytes(w.buf[start:start + size])
        os.setxattr(self.xpath(nodeid), name, value, flags, follow_symlinks=False)
        self.touched(nodeid)
        return b""

    def getxattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        size = P.GETXATTR_IN.unpack_from(w.buf, B)[0]
        name = name_at(w.buf, B + P.GETXATTR_IN.size, n)[0]
        return self.sized(os.getxattr(self.xpath(nodeid), name, follow_symlinks=False), size)

    def listxattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        size = P.GETXATTR_IN.unpack_from(w.buf, B)[0]
        names = os.listxattr(self.xpath(nodeid), follow_symlinks=False)
        return self.sized(b"".join(os.fsencode(name) + b"\0" for name in names), size)

    def removexattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        name = name_at(w.buf, B, n)[0]
        os.removexattr(self.xpath(nodeid), name, follow_symlinks=False)
        self.touched(nodeid)
        return b""

    @staticmethod
    def sized(data: bytes, size: int) -> bytes:
        """A value, or its size when asked with size 0; ERANGE when it does not fit."""
        if size == 0:
            return P.GETXATTR_OUT.pack(len(data), 0)
        if len(data) > size:
            raise fail(ERANGE)
        return data

    # -- directories ------------------------------------------------------------

    def opendir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fd = os.open(self.path(nodeid), DIR_FLAGS, dir_fd=self.fd)
        self.listings[fd] = None
        return P.OPEN_OUT.pack(fd, 0, 0)

    def readdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, size = READ_HEAD.unpack_from(w.buf, B)
        entries = self.listings.get(fh)
        if entries is None or offset == 0:
            entries = self.listings[fh] = self.scan(fh, nodeid)
        out = []
        total = 0
        for i in range(offset, len(entries)):
            entry = entries[i]
            total += len(entry)
            if total > size:
                break
            out.append(entry)
        return b"".join(out)

    def scan(self, fd: int, nodeid: int) -> List[bytes]:
        """The directory's fuse_dirents, offsets 1..n; on the way, its folded-name table."""
        os.lseek(fd, 0, os.SEEK_SET)
        st = os.fstat(fd)
        key = dir_key(st)
        dirent = P.dirent
        entries = [dirent(st.st_ino, 1, b".", DT_DIR), dirent(st.st_ino, 2, b"..", DT_DIR)]
        names = []
        with os.scandir(fd) as it:
            for item in it:
                name = item.name
                names.append(name)
                if item.is_symlink():
                    kind = DT_LNK
                elif item.is_dir(follow_symlinks=False):
                    kind = DT_DIR
                elif item.is_file(follow_symlinks=False):
                    kind = DT_REG
                else:
                    kind = DT_UNKNOWN
                entries.append(dirent(item.inode(), len(entries) + 1,
                                      name.encode(ENC, ERRORS), kind))
        node = self.nodes.get(nodeid)
        if node is not None and node.paths:
            self.store(node.paths[0], key, fold(names))
        return entries

    def releasedir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh = P.RELEASE_IN.unpack_from(w.buf, B)[0]
        self.listings.pop(fh, None)
        os.close(fh)
        return b""

    def fsyncdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        # Same request layout; the handle is the directory's descriptor.
        return self.fsync(w, unique, nodeid, n)

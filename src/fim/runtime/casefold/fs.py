"""The request handlers: FUSE requests answered from SOURCE, names matched by case folding.

`CaseFold` composes the name index (names.py: which real name a spelling finds) and the
node table (nodes.py: which paths a nodeid stands for), and keeps what is the kernel's
business: open handles, passthrough, directory listings, invalidations.

Paths are relative to SOURCE and used with the directory descriptor opened before the
mount (`fd`), so SOURCE may even be the mount point itself. The final component is
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

import fcntl
import os
import sys
from errno import EEXIST, EISDIR, ENOENT, EOPNOTSUPP, EPROTO, ERANGE

from fim.runtime import libc
from fim.runtime.casefold import protocol as P
from fim.runtime.casefold.names import DIR_FLAGS, NameIndex, dir_key, fold, join
from fim.runtime.casefold.nodes import S_IFDIR, S_IFMT, NodeTable
from fim.runtime.casefold.protocol import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from fim.runtime.casefold.names import Found
    from fim.runtime.casefold.nodes import Node

    Handler = Callable[["Worker", int, int, int], Optional[bytes]]

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
B = P.IN_SIZE  # where a request's body starts
# Requests about a node's own path: ENOENT there means the node went away behind our
# back, and ESTALE makes the kernel look its name up again instead of failing.
NODE_OPS = (P.GETATTR, P.SETATTR, P.READLINK, P.OPEN, P.OPENDIR, P.ACCESS, P.SETXATTR,
            P.GETXATTR, P.LISTXATTR, P.REMOVEXATTR)

# Kept from the caller's flags on OPEN/CREATE: O_DIRECT would need aligned buffers.
OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT
OPEN_ADD = os.O_NOFOLLOW | os.O_CLOEXEC

ENC = sys.getfilesystemencoding()
ERRORS = sys.getfilesystemencodeerrors()

READ_HEAD = P.READ_HEAD
TIMESPECS = P.TIMESPECS


def name_at(buf: bytearray, start: int, end: int) -> Tuple[str, int]:
    """The NUL-terminated name at `start`, and where the next field begins."""
    stop = buf.index(0, start, end)
    return buf[start:stop].decode(ENC, ERRORS), stop + 1


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
        names = self.names = NameIndex(source_fd)
        self.nodes = NodeTable(os.fstat(source_fd), names.forget_dirs, names.lstat)
        self.lstat = names.lstat  # bound once: SOURCE's lstat, shared with the name index
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

    def function(self, name: str) -> Callable[..., int]:
        """The C function `name`, looked up on first use: a C library without it (an old
        glibc without renameat2) fails that request only, not the mount."""
        call = self.calls.get(name)
        if call is None:
            call = self.calls[name] = libc.function(name)
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

    # -- the kernel's inodes -----------------------------------------------------

    def touched(self, nodeid: int) -> None:
        """After a change through `nodeid`: the kernel's other inodes of the same file (its
        other spellings) drop their attributes, and with them (AUTO_INVAL_DATA) stale pages.
        Sent before the reply: it takes no lock the request may hold."""
        nodes = self.nodes
        if nodes.aliases:
            node = nodes.ids.get(nodeid)
            if node is not None:
                self.inval(nodes.others(node))

    def touched_file(self, dev: int, ino: int, path: Optional[str],
                     skip: Optional[Node] = None) -> None:
        nodes = self.nodes
        if nodes.aliases:
            self.inval([n for n in nodes.related(dev, ino, path) if n is not skip])

    def inval(self, changed: List[Node]) -> None:
        for node in changed:
            try:
                os.write(self.dev, P.inval_inode(node.nodeid, -1))
            except OSError:
                pass  # ENOENT: the kernel no longer holds it

    def invalidate(self, changed: List[Node]) -> None:
        """After an unlink or rename changed the paths of several nodes (other spellings,
        other links): the kernel drops what it holds of them, and looks them up again.
        With one node changed, that is the one the kernel acted on."""
        if len(changed) > 1:
            self.inval(list(set(changed)))

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
        nodes = self.nodes
        resolve = self.names.resolve
        gen = nodes.gen
        real, path, st = resolve(nodes.path(nodeid), name)
        with nodes.lock:
            if gen != nodes.gen:  # a rename or unlink ran meanwhile: again, atomically
                real, path, st = resolve(nodes.path(nodeid), name)
            node = nodes.remember(path, st, None if real == name else name)
        return self.entry(node, st)

    def forget(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        (count,) = P.FORGET_IN.unpack_from(w.buf, B)
        nodes = self.nodes
        with nodes.lock:
            nodes.drop(nodeid, count)
        return None

    def batch_forget(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        count = P.BATCH_FORGET_IN.unpack_from(w.buf, B)[0]
        one = P.FORGET_ONE
        start = B + P.BATCH_FORGET_IN.size
        nodes = self.nodes
        with nodes.lock:
            for i in range(min(count, (n - start) // one.size)):
                forgotten, times = one.unpack_from(w.buf, start + i * one.size)
                nodes.drop(forgotten, times)
        return None

    def getattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        flags, _, fh = P.GETATTR_IN.unpack_from(w.buf, B)
        nodes = self.nodes
        node = nodes.node(nodeid)
        st = os.fstat(fh) if flags & P.GETATTR_FH else self.lstat(nodes.path(nodeid))
        return P.ATTR_OUT.pack(TIMEOUT if node.exact else 0, 0, 0, *P.attr(st))

    def setattr(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        (valid, _, fh, size, _, atime, mtime, _, atimensec, mtimensec, _, mode, _, uid, gid,
         _) = P.SETATTR_IN.unpack_from(w.buf, B)
        node = self.nodes.node(nodeid)
        fd = fh if valid & P.FATTR_FH else -1
        path = "" if fd >= 0 else self.nodes.path(nodeid)
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
            self.function("futimens")(fd, times)
        else:
            self.function("utimensat")(self.fd, os.fsencode(path), times, AT_SYMLINK_NOFOLLOW)

    def readlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return os.fsencode(os.readlink(self.nodes.path(nodeid), dir_fd=self.fd))

    def symlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        name, start = name_at(w.buf, B, n)
        target = name_at(w.buf, start, n)[0]
        return self.make(w, nodeid, name,
                         lambda path: os.symlink(target, path, dir_fd=self.fd))

    def mknod(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        mode, rdev, _, _ = P.MKNOD_IN.unpack_from(w.buf, B)
        name = name_at(w.buf, B + P.MKNOD_IN.size, n)[0]
        return self.make(w, nodeid, name,
                         lambda path: os.mknod(path, mode, P.decode_dev(rdev), dir_fd=self.fd))

    def mkdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        mode = P.MKDIR_IN.unpack_from(w.buf, B)[0]
        name = name_at(w.buf, B + P.MKDIR_IN.size, n)[0]
        return self.make(w, nodeid, name,
                         lambda path: os.mkdir(path, mode & 0o7777, dir_fd=self.fd))

    def make(self, w: Worker, nodeid: int, name: str, call: Callable[[str], None]) -> bytes:
        """SYMLINK, MKNOD, MKDIR: `call` makes the entry `name` at the path given, unless a
        name folding alike exists; the new entry is the caller's."""
        uid, gid = P.IN_IDS.unpack_from(w.buf, 24)
        names = self.names
        nodes = self.nodes
        with nodes.lock:
            parent = nodes.path(nodeid)
            path, table = names.fresh(parent, name)
            call(path)
            self.own(parent, path, uid, gid)
            st = self.lstat(path)
            names.cache_after(parent, table, add=name)
            return self.entry(nodes.remember(path, st, None), st)

    def link(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        old = P.LINK_IN.unpack_from(w.buf, B)[0]
        name = name_at(w.buf, B + P.LINK_IN.size, n)[0]
        names = self.names
        nodes = self.nodes
        with nodes.lock:
            source = nodes.path(old)
            parent = nodes.path(nodeid)
            path, table = names.fresh(parent, name)
            os.link(source, path, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
            st = self.lstat(path)
            names.cache_after(parent, table, add=name)
            # One node for both names, the file's node of exact names (as the kernel
            # keeps one inode per file).
            node = nodes.linked(source, path, st)
        self.touched_file(st.st_dev, st.st_ino, path, node)
        return self.entry(node, st)

    def unlink(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return self.remove(w, nodeid, n, os.unlink)

    def rmdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        return self.remove(w, nodeid, n, os.rmdir)

    def remove(self, w: Worker, nodeid: int, n: int, call: Callable[..., None]) -> bytes:
        name = name_at(w.buf, B, n)[0]
        names = self.names
        nodes = self.nodes
        with nodes.lock:
            parent = nodes.path(nodeid)
            real, path, st = names.resolve(parent, name)
            table = names.cache_before(parent)
            call(path, dir_fd=self.fd)
            nodes.gen += 1
            names.cache_after(parent, table, remove=real)
            nodes.unlinked(path, st)
            changed = nodes.take_changed()
        self.invalidate(changed)
        self.touched_file(st.st_dev, st.st_ino, path)
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
        names = self.names
        nodes = self.nodes
        with nodes.lock:
            old_parent = nodes.path(olddir)
            new_parent = nodes.path(newdir)
            old_real, old_path, old_st = names.resolve(old_parent, oldname)
            target = names.find(new_parent, newname)
            dest = join(new_parent, newname)
            if target is not None and target[1] == old_path:
                # The same entry: a change of case, or nothing.
                if newname == old_real or flags & P.RENAME_EXCHANGE:
                    return b""
                table = names.cache_before(old_parent)
                os.rename(old_path, dest, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                nodes.gen += 1
                names.cache_after(old_parent, table, remove=old_real, add=newname)
                mover = nodes.kernel_node(old_path, old_st, oldname, old_real)
                nodes.moved(old_path, dest, old_st, mover)
            elif flags & P.RENAME_EXCHANGE:
                if target is None:
                    raise fail(ENOENT)
                self.exchange(old_parent, old_path, old_st, new_parent, target)
            else:
                if target is not None and flags & P.RENAME_NOREPLACE:
                    raise fail(EEXIST)
                self.replace(old_parent, old_real, old_path, old_st, new_parent, newname,
                             target, flags, nodes.kernel_node(old_path, old_st, oldname, old_real))
            changed = nodes.take_changed()
        self.invalidate(changed)
        self.touched_file(old_st.st_dev, old_st.st_ino, dest)
        return b""

    def replace(self, old_parent: str, old_real: str, old_path: str, old_st: os.stat_result,
                new_parent: str, newname: str, target: Optional[Found], flags: int,
                mover: Optional[Node]) -> None:
        """rename(2) onto `newname`, or onto the entry folding alike (`target`), replacing
        it and then taking the spelling asked for. Under the lock."""
        names = self.names
        nodes = self.nodes
        old_table = names.cache_before(old_parent)
        new_table = old_table if new_parent == old_parent else names.cache_before(new_parent)
        dest = join(new_parent, newname)
        self.renameat(old_path, dest if target is None else target[1], flags)
        nodes.gen += 1
        if target is not None:
            nodes.unlinked(target[1], target[2])
            if target[0] != newname:
                try:
                    os.rename(target[1], dest, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                except OSError:
                    dest = target[1]
                    newname = target[0]
            names.cache_after(new_parent, new_table, remove=target[0])
        names.cache_after(old_parent, old_table, remove=old_real)
        names.cache_after(new_parent, new_table, add=newname)
        nodes.moved(old_path, dest, old_st, mover)

    def exchange(self, old_parent: str, old_path: str, old_st: os.stat_result,
                 new_parent: str, target: Found) -> None:
        """renameat2(RENAME_EXCHANGE): both names stay, their files swap. Under the lock."""
        names = self.names
        nodes = self.nodes
        old_table = names.cache_before(old_parent)
        new_table = names.cache_before(new_parent)
        self.renameat(old_path, target[1], P.RENAME_EXCHANGE)
        nodes.gen += 1
        swap = "\0"  # no path holds a NUL
        nodes.moved(old_path, swap, old_st)
        nodes.moved(target[1], old_path, target[2])
        nodes.moved(swap, target[1], old_st)
        names.cache_after(old_parent, old_table)
        names.cache_after(new_parent, new_table)

    def renameat(self, old: str, new: str, flags: int) -> None:
        if flags == 0:
            os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            self.function("renameat2")(self.fd, os.fsencode(old), self.fd, os.fsencode(new),
                                       flags)

    def open(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        flags = P.OPEN_IN.unpack_from(w.buf, B)[0]
        nodes = self.nodes
        node = nodes.node(nodeid)
        fd = os.open(nodes.path(nodeid), (flags & ~OPEN_STRIP) | OPEN_ADD, dir_fd=self.fd)
        if flags & os.O_TRUNC:
            self.touched(nodeid)
        return self.opened(node, fd)

    def opened(self, node: Node, fd: int) -> bytes:
        """fuse_open_out for `fd`: in passthrough when possible (files of exact names
        only: the other spellings' nodes go through here, so that their writes reach the
        invalidation of the exact node), else cached and kept across opens."""
        if (self.passthrough or node.backing) and node.exact and node.kind == S_IFREG:
            with self.nodes.lock:
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
        names = self.names
        nodes = self.nodes
        with nodes.lock:
            parent = nodes.path(nodeid)
            found = names.find(parent, name)
            if found is not None:  # O_CREAT acts on the entry folding alike
                if flags & os.O_EXCL:
                    raise fail(EEXIST)
                real, path, st = found
                if st.st_mode & S_IFMT == S_IFDIR:
                    raise fail(EISDIR)
                fd = os.open(path, (flags & ~OPEN_STRIP) | OPEN_ADD, dir_fd=self.fd)
                node = nodes.remember(path, st, None if real == name else name)
            else:
                path = join(parent, name)
                table = names.cache_before(parent)
                fd = os.open(path, (flags & ~OPEN_STRIP) | OPEN_ADD | os.O_CREAT,
                             mode & 0o7777, dir_fd=self.fd)
                self.own(parent, path, uid, gid)
                names.cache_after(parent, table, add=name)
                node = None
        try:
            st = os.fstat(fd)
            if node is None:
                with nodes.lock:
                    node = nodes.remember(path, st, None)
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
        if self.nodes.aliases:  # only then can another inode hold stale attributes
            self.touched(nodeid)
        return P.WRITE_OUT.pack(written, 0)

    def fallocate(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh, offset, length, mode, _ = P.FALLOCATE_IN.unpack_from(w.buf, B)
        self.function("fallocate")(fh, mode, libc.longlong(offset), libc.longlong(length))
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
            with self.nodes.lock:
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
        self.lstat(self.nodes.path(nodeid))  # permissions: the kernel's (default_permissions)
        return b""

    # -- extended attributes ----------------------------------------------------

    def xpath(self, nodeid: int) -> str:
        return self.xroot + "/" + self.nodes.path(nodeid)

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
        fd = os.open(self.nodes.path(nodeid), DIR_FLAGS, dir_fd=self.fd)
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
        node = self.nodes.ids.get(nodeid)
        if node is not None and node.paths:
            self.names.store(node.paths[0], key, fold(names))
        return entries

    def releasedir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        fh = P.RELEASE_IN.unpack_from(w.buf, B)[0]
        self.listings.pop(fh, None)
        os.close(fh)
        return b""

    def fsyncdir(self, w: Worker, unique: int, nodeid: int, n: int) -> Optional[bytes]:
        # Same request layout; the handle is the directory's descriptor.
        return self.fsync(w, unique, nodeid, n)

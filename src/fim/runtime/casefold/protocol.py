"""The FUSE kernel protocol as casefold speaks it (include/uapi/linux/fuse.h, 7.31).

Every structure is a precompiled `struct.Struct` in the kernel's layout: native byte
order, standard sizes, explicit padding (`=`), as the C header's fixed-width fields.
The tests check each size against the header's.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import stat_result
    from typing import Tuple

MAJOR = 7
MINOR = 40  # passthrough (7.40); every structure used here is unchanged since 7.31

# Opcodes (enum fuse_opcode).
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
ACCESS = 34
CREATE = 35
INTERRUPT = 36
DESTROY = 38
BATCH_FORGET = 42
FALLOCATE = 43
RENAME2 = 45
LSEEK = 46
OPCODES = 64  # size of the dispatch table; higher opcodes get ENOSYS

# fuse_init_out.flags
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
INIT_EXT = 1 << 30  # flags2 is valid
# fuse_init_out.flags2 (the high half of the 64-bit flags)
PASSTHROUGH2 = 1 << (37 - 32)

# fuse_open_out.open_flags
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NOFLUSH = 1 << 5  # no FLUSH request on close (7.35): nothing to flush here
FOPEN_PASSTHROUGH = 1 << 7  # reads, writes and mmap go to a backing file in the kernel

# ioctls on /dev/fuse (FUSE_DEV_IOC_MAGIC 229): register a backing file (needs
# CAP_SYS_ADMIN in the initial user namespace), and drop it.
BACKING_OPEN = 0x4010E501  # _IOW(229, 1, struct fuse_backing_map)
BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, uint32_t)
BACKING_MAP = struct.Struct("=iIQ")  # fd flags padding
U32 = struct.Struct("=I")

# fuse_getattr_in.getattr_flags
GETATTR_FH = 1

# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8

# fuse_fsync_in.fsync_flags
FSYNC_FDATASYNC = 1

# renameat2(2) flags
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1

# enum fuse_notify_code
NOTIFY_INVAL_INODE = 2

# Headers.
IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
IN_HEAD = struct.Struct("=IQQ")  # opcode unique nodeid, read at offset 4
IN_IDS = struct.Struct("=II")  # uid gid, read at offset 24
IN_SIZE = IN_HEADER.size  # 40, where every request's body starts

# fuse_attr: ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink
# uid gid rdev blksize flags
_ATTR = "QQQqqqIIIIIIIIII"
ATTR = struct.Struct("=" + _ATTR)
ENTRY_OUT = struct.Struct("=QQQQII" + _ATTR)  # nodeid generation entry/attr valid (+nsec)
ATTR_OUT = struct.Struct("=QII" + _ATTR)  # attr_valid attr_valid_nsec dummy attr

INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags (then flags2 with INIT_EXT)
# major minor max_readahead flags max_background congestion_threshold max_write time_gran
# max_pages map_alignment flags2 max_stack_depth unused
INIT_OUT = struct.Struct("=IIIIHHIIHHII24x")
FORGET_IN = struct.Struct("=Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("=II")  # count dummy
FORGET_ONE = struct.Struct("=QQ")  # nodeid nlookup
GETATTR_IN = struct.Struct("=IIQ")  # getattr_flags dummy fh
# valid padding fh size lock_owner atime mtime ctime atimensec mtimensec ctimensec mode
# unused4 uid gid unused5
SETATTR_IN = struct.Struct("=IIQQQqqqIIIIIIII")
MKNOD_IN = struct.Struct("=IIII")  # mode rdev umask padding
MKDIR_IN = struct.Struct("=II")  # mode umask
RENAME_IN = struct.Struct("=Q")  # newdir
RENAME2_IN = struct.Struct("=QII")  # newdir flags padding
LINK_IN = struct.Struct("=Q")  # oldnodeid
OPEN_IN = struct.Struct("=II")  # flags open_flags
CREATE_IN = struct.Struct("=IIII")  # flags mode umask open_flags
OPEN_OUT = struct.Struct("=QIi")  # fh open_flags backing_id
READ_IN = struct.Struct("=QQIIQII")  # fh offset size read_flags lock_owner flags padding
WRITE_IN = struct.Struct("=QQIIQII")  # fh offset size write_flags lock_owner flags padding
READ_HEAD = struct.Struct("=QQI")  # fh offset size: what read and write use of *_in
WRITE_OUT = struct.Struct("=II")  # size padding
RELEASE_IN = struct.Struct("=QIIQ")  # fh flags release_flags lock_owner
FLUSH_IN = struct.Struct("=QIIQ")  # fh unused padding lock_owner
FSYNC_IN = struct.Struct("=QII")  # fh fsync_flags padding
# blocks bfree bavail files ffree bsize namelen frsize padding spare[6]
STATFS_OUT = struct.Struct("=QQQQQIIII24x")
SETXATTR_IN = struct.Struct("=II")  # size flags (without FUSE_SETXATTR_EXT)
GETXATTR_IN = struct.Struct("=II")  # size padding
GETXATTR_OUT = struct.Struct("=II")  # size padding
ACCESS_IN = struct.Struct("=II")  # mask padding
INTERRUPT_IN = struct.Struct("=Q")  # unique
FALLOCATE_IN = struct.Struct("=QQQII")  # fh offset length mode padding
LSEEK_IN = struct.Struct("=QQII")  # fh offset whence padding
LSEEK_OUT = struct.Struct("=Q")  # offset
DIRENT = struct.Struct("=QQII")  # ino off namelen type, then the name padded to 8
TIMESPECS = struct.Struct("=qqqq")  # struct timespec[2], for utimensat(2)
NOTIFY_INVAL_INODE_OUT = struct.Struct("=Qqq")  # nodeid offset length

NS = 1_000_000_000


def encode_dev(rdev: int) -> int:
    """glibc's dev_t as the kernel's new_encode_dev() (fuse_attr.rdev, fuse_mknod_in.rdev)."""
    major = os.major(rdev)
    minor = os.minor(rdev)
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(dev: int) -> int:
    """The kernel's new_decode_dev() as glibc's dev_t."""
    major = (dev & 0xFFF00) >> 8
    minor = (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
    return os.makedev(major, minor)


def attr(st: stat_result) -> Tuple[int, ...]:
    """fuse_attr's fields from an lstat() result (the ino is SOURCE's)."""
    a = st.st_atime_ns
    m = st.st_mtime_ns
    c = st.st_ctime_ns
    rdev = st.st_rdev
    return (st.st_ino, st.st_size, st.st_blocks, a // NS, m // NS, c // NS, a % NS, m % NS,
            c % NS, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
            encode_dev(rdev) if rdev else 0, st.st_blksize, 0)


def fail(errno: int) -> OSError:
    """What a handler raises to answer `errno` (server.py sends the error reply)."""
    return OSError(errno, os.strerror(errno))


def reply(unique: int, payload: bytes) -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), 0, unique) + payload


def error(unique: int, errno: int) -> bytes:
    return OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)


def inval_inode(nodeid: int, offset: int) -> bytes:
    """Drop the kernel's attributes of `nodeid` and, from `offset` unless negative, its pages
    (attributes only: no lock taken, safe to send while answering a request)."""
    body = NOTIFY_INVAL_INODE_OUT.pack(nodeid, offset, 0)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE, 0) + body


def dirent(ino: int, offset: int, name: bytes, kind: int) -> bytes:
    """One fuse_dirent: `offset` is the cookie of the entry after it."""
    pad = -len(name) & 7
    return DIRENT.pack(ino, offset, len(name), kind) + name + b"\0" * pad

"""casefold: SOURCE served at MOUNTPOINT case-insensitively, over FUSE, in pure Python.

    python3 -I -S -m fim.runtime.casefold SOURCE MOUNTPOINT

A passthrough filesystem speaking the FUSE kernel protocol on /dev/fuse itself (no
libfuse, standard library only, Python 3.9+). The caller must be root: real root, or
uid 0 in a user + mount namespace. Like squashfuse, the command returns (status 0) only
once the mount is in place and answered its first request; on failure it prints one
`E::` line and returns non-zero. The server (a forked child) exits by itself when the
mount goes away.

Semantics:

* Lookups ignore case by Unicode case folding (`str.casefold()`: "STRASSE" finds
  "straße", "ÉTÉ" finds "été"); names keep the case they were created with.
* Creating a name whose folded form exists acts on the existing entry: O_CREAT opens
  it, O_EXCL and mkdir/mknod/symlink/link give EEXIST.
* rename(2) to a name differing only in case renames the entry (`os.rename("readme.txt",
  "README.txt")`, busybox `mv`); a rename over a folded-equal entry replaces it and keeps
  the new spelling. GNU `mv readme.txt README.txt` refuses before asking the filesystem
  ("are the same file": both names are one inode), as on any case-insensitive
  filesystem; reporting another inode number would let `cp a A` truncate its source.
* Collisions: SOURCE may hold names that differ only in case (from a lower layer, or
  made behind the mount's back). Each stays reachable by its exact name. Any other
  spelling resolves deterministically: an entry with exactly that name first, else the
  first of the colliding real names in sorted (code point) order. The listing shows
  every real name.
* Everything else (hard links, symlinks, attributes, xattrs, mmap, O_APPEND, sparse
  and large files, statfs, fsync, fallocate, SEEK_DATA/SEEK_HOLE) is SOURCE's own.
* In a user namespace, files whose owner or group is unmapped show as the overflow ids
  and the kernel refuses to write them through the mount (HAS_UNMAPPED_ID).

Design: the node table (nodes.py) maps nodeid -> paths relative to SOURCE, used
through a descriptor of SOURCE opened before mounting (renames rewrite the node and
everything under it; FORGET frees). The name index (names.py) keeps per directory a
cache {folded name: real names} validated against the directory's mtime/ctime/size and
kept up to date by every change made through the mount. An exact name never needs the
cache: one lstat() finds it. The request handlers (fs.py) compose the two. A lookup by
another spelling gets a node of its own with no kernel caching, so the kernel sees
`README.txt` and `readme.txt` as two inodes and passes a case-only rename on to us (it
skips renames onto the same inode); changes through one spelling invalidate the
attributes the kernel cached for the others, and a name that went away through another
spelling answers ESTALE, so the kernel looks it up again. As root of the initial user
namespace, files are opened in FUSE passthrough (the kernel reads and writes SOURCE's
file itself); otherwise reads are pread() into per-thread buffers. Several threads read
/dev/fuse (server.py; protocol.py holds the kernel's structures).
"""

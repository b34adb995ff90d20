"""Deletions in the upper directory: one canonical form, and conversions to and from
the forms the FUSE backends write.

Canonical form (what kernel overlayfs reads, and what bubblewrap's overlay writes):
  * a deleted entry is a character device 0/0 with the entry's name;
  * a directory that hides the same directory of the layers below (removed and
    recreated) carries the xattr `user.overlay.opaque` = `y`.

fuse-overlayfs reads the canonical form, but marks opaque directories its own
way: a `.wh..wh..opq` file, a `.wh..opq` device, and `trusted.overlay.opaque`
(as root) or `user.fuseoverlayfs.opaque` (in a user namespace); where it cannot
make a device it writes `.wh.<name>` files instead.

unionfs-fuse neither reads nor writes the canonical form: it records a deleted
path, and a directory that hides the layers' one, as `.unionfs-fuse/<path>_HIDDEN~`
in the upper directory (an empty file, or an empty directory for a directory).

`to_canonical` accepts any mixture of the three (so it is safe to run again
after a crash halfway), `to_unionfs` turns canonical into unionfs-fuse's form.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence, Tuple

# The xattrs that make a directory opaque: the canonical one first, then kernel
# overlayfs' as root and fuse-overlayfs' in a user namespace.
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
OPAQUE = OPAQUE_XATTRS[0]
_FOREIGN_OPAQUE = OPAQUE_XATTRS[1:]
UNIONFS_META = ".unionfs-fuse"
HIDDEN = "_HIDDEN~"
_WH = ".wh."
_WH_OPAQUE = (".wh..wh..opq", ".wh..opq")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def make_whiteout(path: str) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def set_opaque(path: str) -> None:
    os.setxattr(path, OPAQUE, b"y", follow_symlinks=False)


def _xattr(path: str, name: str) -> bytes:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return b""


def _remove_xattr(path: str, name: str) -> None:
    try:
        os.removexattr(path, name, follow_symlinks=False)
    except OSError:
        pass


def _ensure_parents(upper: str, rel: str, lowers: Sequence[str]) -> None:
    """Create the upper directories leading to `rel`, with the layers' modes."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        path = os.path.join(upper, sub)
        if os.path.isdir(path):
            continue
        # The mode the merged view shows: the newest layer's directory.
        below = [os.path.join(d, sub) for d in lowers if os.path.isdir(os.path.join(d, sub))]
        mode = stat.S_IMODE(os.stat(below[0]).st_mode) if below else 0o755
        os.mkdir(path, mode)


def _hidden_above(upper: str, rel: str) -> bool:
    """Whether an ancestor of `rel` in the upper dir already hides everything below it."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        path = os.path.join(upper, *parts[:i])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if is_whiteout(st) or (stat.S_ISDIR(st.st_mode) and _xattr(path, OPAQUE) == b"y"):
            return True
    return False


def _from_unionfs(upper: str, lowers: Sequence[str]) -> None:
    meta = os.path.join(upper, UNIONFS_META)
    if not os.path.isdir(meta) or os.path.islink(meta):
        return
    hidden = []
    for root, dirs, files in os.walk(meta):
        # A hidden directory's marker is an empty directory `<name>_HIDDEN~`.
        markers = [n for n in files + dirs if n.endswith(HIDDEN)]
        dirs[:] = [d for d in dirs if not d.endswith(HIDDEN)]
        for name in markers:
            hidden.append(os.path.relpath(os.path.join(root, name[: -len(HIDDEN)]), meta))
    # Shallow paths first: a marker below a hidden or opaque ancestor is redundant
    # (`rm -rf dir` leaves one for every entry it removed).
    for rel in sorted(hidden, key=lambda r: r.count("/")):
        if _hidden_above(upper, rel):
            continue
        target = os.path.join(upper, rel)
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                set_opaque(target)
            # A file recreated over the hidden path needs no marker.
        else:
            _ensure_parents(upper, rel, lowers)
            make_whiteout(target)
    from fim.runtime.files import remove_tree

    remove_tree(meta)


def _from_fuse_overlayfs(upper: str) -> None:
    for root, dirs, files in os.walk(upper):
        names = set(files) | set(dirs)
        foreign = [x for x in _FOREIGN_OPAQUE if _xattr(root, x) == b"y"]
        if root != upper and (foreign or _WH_OPAQUE[0] in names):
            set_opaque(root)
        for x in foreign:
            _remove_xattr(root, x)
        for name in files:
            path = os.path.join(root, name)
            if name in _WH_OPAQUE:
                os.unlink(path)
            elif name.startswith(_WH):
                os.unlink(path)
                target = os.path.join(root, name[len(_WH):])
                if not os.path.lexists(target):
                    make_whiteout(target)


def to_canonical(upper: str, lowers: Sequence[str] = ()) -> None:
    """Rewrite every backend's deletion markers in `upper` into the canonical form."""
    _from_unionfs(upper, lowers)
    _from_fuse_overlayfs(upper)


def to_unionfs(upper: str) -> None:
    """Rewrite a canonical upper directory into unionfs-fuse's form."""
    meta = os.path.join(upper, UNIONFS_META)

    def mark(rel: str) -> None:
        marker = os.path.join(meta, rel + HIDDEN)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "wb"):
            pass

    for root, dirs, files in os.walk(upper):
        if root == upper and UNIONFS_META in dirs:
            dirs.remove(UNIONFS_META)
        for name in dirs:
            path = os.path.join(root, name)
            if _xattr(path, OPAQUE) == b"y":
                mark(os.path.relpath(path, upper))
        for name in files:
            path = os.path.join(root, name)
            if is_whiteout(os.lstat(path)):
                os.unlink(path)
                mark(os.path.relpath(path, upper))


def scan(layer_dir: str) -> Tuple[List[str], List[str]]:
    """Deletion markers of a read-only layer: (whiteout paths, opaque dir paths)."""
    gone: List[str] = []
    opaque: List[str] = []
    for root, dirs, files in os.walk(layer_dir):
        for name in dirs:
            path = os.path.join(root, name)
            if _xattr(path, OPAQUE) == b"y":
                opaque.append(os.path.relpath(path, layer_dir))
        for name in files:
            path = os.path.join(root, name)
            if is_whiteout(os.lstat(path)):
                gone.append(os.path.relpath(path, layer_dir))
    return gone, opaque


def unionfs_branch(directory: str, paths: Sequence[str]) -> str:
    """A read-only unionfs-fuse branch that hides `paths` in the branches below it."""
    meta = os.path.join(directory, UNIONFS_META)
    for rel in paths:
        marker = os.path.join(meta, rel + HIDDEN)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "wb"):
            pass
    os.makedirs(directory, exist_ok=True)
    return directory

"""One layer's own tree written to a directory (`fim-layer extract INDEX DIR`).

The layer is mounted with its format's tool (squashfuse_ll, dwarfs: embedded in the
image, so no host tool is needed and DwarFS layers work alike) in private namespaces
entered as commits enter them (rootless: the caller is 0, its subordinate ids mapped
when it has them), and copied: contents, modes with setuid bits, owners, times,
xattrs, symbolic links as stored, hard links as links, FIFOs, device nodes where the
caller may make them, and the layer's deletion markers in their canonical form (0/0
character devices, user.overlay.opaque): `fim-layer create` of the directory makes
the same layer again. unsquashfs would need a copy of the layer (squashfs-tools 4.5
cannot read at an offset) and does not read DwarFS (docs/oci.md).

The tree is written beside DIR and renamed to it once complete: a failure leaves no
half-written DIR.
"""

from __future__ import annotations

import os
import stat

from fim.runtime import files, idmap, namespaces
from fim.runtime.errors import FimError
from fim.runtime.layers import mount
from fim.runtime.overlays.whiteouts import is_whiteout
from fim.runtime.record import dataclass
from fim.runtime.unwind import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Tuple

    from fim.runtime.layers import Layer
    from fim.runtime.paths import Paths

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Result:
    entries: int
    owners_lost: int  # entries whose owner this caller cannot give them (kept as its own)
    devices_skipped: List[str]  # device nodes only root may make
    xattrs_lost: int  # xattrs the destination or the caller refused


def check_destination(dest: str) -> None:
    """DIR is new, or an empty directory: nothing the user had is replaced."""
    if os.path.lexists(dest) and not (os.path.isdir(dest) and not os.path.islink(dest)
                                      and not os.listdir(dest)):
        raise FimError(f"'{dest}' exists and is not an empty directory")
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise FimError(f"'{parent}' is not a directory")


def extract(layer: Layer, dest: str, paths: Paths, environ: Mapping[str, str],
            verbose: bool) -> Result:
    from fim.runtime.layers import verify

    check_destination(dest)
    verify.before_mount([layer], paths)  # a damaged layer is refused, not copied
    dest = os.path.abspath(dest)
    uid, gid = os.getuid(), os.getgid()
    with Stack() as stack:
        namespaces.enter(uid, gid, pid=False, sub=idmap.subordinate(uid, gid, environ))
        os.makedirs(paths.dir_logs, exist_ok=True)
        stack.push(files.remove_tree, paths.dir_instance)
        point = mount.mount_all(stack, [layer], paths, environ, verbose)[0]
        partial = files.beside(dest)
        stack.push(files.remove_tree, partial)
        os.mkdir(partial, 0o700)
        result = _copy(point, partial)
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty (checked): the copy takes its place
        os.rename(partial, dest)
        files.fsync_path(os.path.dirname(dest))
    return result


class _Copier:
    def __init__(self) -> None:
        self.entries = 0
        self.owners_lost = 0
        self.devices: List[str] = []
        self.xattrs_lost = 0
        self.linked: Dict[Tuple[int, int], str] = {}

    def attributes(self, source: str, target: str, st: os.stat_result) -> None:
        link = stat.S_ISLNK(st.st_mode)
        try:
            names = os.listxattr(source, follow_symlinks=False)
        except OSError:
            names = []
        for name in names:
            try:
                value = os.getxattr(source, name, follow_symlinks=False)
                os.setxattr(target, name, value, follow_symlinks=False)
            except OSError:
                self.xattrs_lost += 1
        try:
            os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        except OSError:
            self.owners_lost += 1
        if not link:
            # After the owner: a change of owner clears setuid and setgid.
            os.chmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def entry(self, source: str, target: str, rel: str, st: os.stat_result) -> bool:
        """Make `target` like `source`; False when it was left out."""
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.linked:
                os.link(self.linked[key], target)
                return False  # a link has its file's attributes
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with open(source, "rb") as f:
                    while True:
                        chunk = f.read(_CHUNK)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            if st.st_nlink > 1:
                self.linked[key] = target
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target, 0o600)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                # A 0/0 character device (a deletion marker) needs no privilege.
                os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            except PermissionError:
                if is_whiteout(st):
                    raise
                self.devices.append(rel)
                return False
        else:
            return False  # a socket: nothing a layer keeps
        return True


def _copy(source: str, target: str) -> Result:
    copier = _Copier()
    todo = [("", source, target)]
    dirs: List[Tuple[str, str, os.stat_result]] = [(source, target, os.lstat(source))]
    while todo:
        rel, src, dst = todo.pop()
        with os.scandir(src) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            st = e.stat(follow_symlinks=False)
            path, out = os.path.join(src, e.name), os.path.join(dst, e.name)
            sub = f"{rel}/{e.name}" if rel else e.name
            copier.entries += 1
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(out, 0o700)  # its own mode once what is inside is written
                dirs.append((path, out, st))
                todo.append((sub, path, out))
            elif copier.entry(path, out, sub, st):
                copier.attributes(path, out, st)
    for path, out, st in reversed(dirs):
        copier.attributes(path, out, st)
    return Result(copier.entries, copier.owners_lost, copier.devices, copier.xattrs_lost)

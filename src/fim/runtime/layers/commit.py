"""The layer pipelines: a directory into a layer file, the container's changes into a
layer (appended to the image, managed, or saved to a file), a layer file onto the image.

Progress lines go to `say`: the command decides where they go.
"""

from __future__ import annotations

import os

from fim.runtime import files, idmap, keeper, namespaces
from fim.runtime.errors import FimError, warn
from fim.runtime.layers import build, detect, module_of
from fim.runtime.overlays import upperdir
from fim.runtime.unwind import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional

    from fim.runtime.image.file import ImageFile
    from fim.runtime.paths import Paths

    Say = Callable[[str], None]

BINARY = "binary"
MANAGED = "layer"
FILE = "file"


def _enter(environ: Mapping[str, str]) -> None:
    # Rootless, the caller becomes 0 over its own files: mksquashfs then reads
    # files the container made unreadable, records them as root (as the
    # container saw them), and clearing the upper dir can remove them. With
    # subordinate ids, files of other owners are read and removed alike.
    uid, gid = os.getuid(), os.getgid()
    namespaces.enter(uid, gid, pid=False, sub=idmap.subordinate(uid, gid, environ))


def _log(paths: Paths) -> str:
    os.makedirs(paths.dir_tmp, exist_ok=True)
    return os.path.join(paths.dir_tmp, "mksquashfs.log")


def _temporary(paths: Paths, hint: str) -> str:
    os.makedirs(paths.dir_tmp, exist_ok=True)
    return os.path.join(paths.dir_tmp, f".{hint}.{os.getpid()}.partial")


def create(paths: Paths, environ: Mapping[str, str], source: str, output: str, level: int,
           say: Say) -> None:
    """Compress `source` into the layer file `output`: made beside it and given its
    name once complete, so that a failure (a full disk) leaves no file there, or an
    existing `output` as it was; a complete one replaces it, as FlatImage's does. The
    caller has said `Gathering files to compress` (FlatImage says it before it looks
    at `source`)."""
    with Stack() as stack:
        if os.path.realpath(source) == os.path.realpath(paths.dir_upper):
            # The image's own upper dir: bring its deletions to the form layers keep.
            keeper.retire(paths)
            upperdir.canonical(stack, paths.state_file, paths.dir_upper)
        _enter(environ)
        tmp = files.beside(output)
        stack.push(files.discard, tmp)
        try:
            build.create(source, tmp, level, paths.dir_runtime, environ, _log(paths))
            os.replace(tmp, output)
            files.fsync_path(os.path.dirname(os.path.abspath(output)))
        except OSError as e:
            raise _failed(e, f"writing the layer '{output}'", "nothing was written") from None
    say("Filesystem created without errors")


def _failed(e: OSError, doing: str, state: str) -> FimError:
    """An OS error (ENOSPC, EDQUOT, EROFS, EACCES, EIO) as one line: its cause, what
    was being done, and what stands."""
    return FimError(f"{e.strerror or type(e).__name__} while {doing}; {state}", 1)


def _place_managed(tmp: str, layers_dir: str) -> str:
    os.makedirs(layers_dir, exist_ok=True)
    while True:
        destination = build.next_managed(layers_dir)
        try:
            files.place(tmp, destination)
            return destination
        except FileExistsError:
            continue  # another commit took the number


def _place_file(tmp: str, destination: str) -> None:
    # Built in the data dir, copied beside the destination, then linked.
    staged = files.beside(destination)
    try:
        files.copy(tmp, staged)
        files.place(staged, destination)
    finally:
        files.discard(staged)


def commit(image: ImageFile, paths: Paths, environ: Mapping[str, str], mode: str,
           destination: Optional[str], level: int, say: Say) -> None:
    """The container's changes as a layer, then the upper dir cleared: only once the
    layer is durably in place, so that a failure at any step loses nothing."""
    if mode == MANAGED:
        build.next_managed(paths.dir_layers)  # refuse past 999 before any work
    elif mode == BINARY:
        image.check_writable()
    os.makedirs(paths.dir_upper, exist_ok=True)
    with Stack() as stack:
        # An idle keeper's FUSE overlay of the upper dir ends before it is read and cleared.
        keeper.retire(paths)
        upperdir.canonical(stack, paths.state_file, paths.dir_upper)
        _enter(environ)
        tmp = _temporary(paths, "commit")
        stack.push(files.discard, tmp)
        kept = "the changes stay in the upper directory"
        try:
            build.create(paths.dir_upper, tmp, level, paths.dir_runtime, environ, _log(paths))
        except OSError as e:
            raise _failed(e, f"writing the layer in '{paths.dir_tmp}'", kept) from None
        if mode == BINARY:
            # A failed append truncates the image back (chain.append) and says so.
            image.append(tmp)
            say("Filesystem appended to binary without errors")
        elif mode == MANAGED:
            try:
                saved = _place_managed(tmp, paths.dir_layers)
            except OSError as e:
                raise _failed(e, f"saving the layer in '{paths.dir_layers}'", kept) from None
            say(f"Layer saved to '{saved}'")
        else:
            assert destination is not None
            try:
                _place_file(tmp, destination)
            except OSError as e:
                raise _failed(e, f"saving the layer to '{destination}'", kept) from None
            say(f"Layer saved to '{destination}'")
        if not files.remove_tree(paths.dir_upper, contents_only=True, report=_cannot_remove):
            files.discard(paths.ids_mark)  # nothing of other owners is left
        say("Finished erasing files")


def _cannot_remove(path: str, is_dir: bool) -> None:
    warn(f"Could not remove {'directory' if is_dir else 'file'} {path}")


def add(image: ImageFile, path: str) -> None:
    """Append the layer file `path` to the image, on top."""
    image.check_writable()
    if not os.path.isfile(path):
        raise FimError(f"Layer file '{path}' does not exist")
    name = detect(path)
    if name is None:
        raise FimError(f"'{path}' is not a layer (SquashFS or DwarFS)")
    # A layer with a digest is checked as it is copied; one without (made by another
    # tool or an older fim) gets one, where its format allows bytes after its own.
    image.append(path, seal=module_of(name).SEALS)

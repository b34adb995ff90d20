"""fim-layer create DIR FILE | add FILE | commit <binary|layer|file PATH> | list"""

from __future__ import annotations

import os

from fim.runtime import config, instance, namespaces
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import chain
from fim.runtime.layers import build, compression_level, detect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-layer' (create,add,commit,list)")
    op, rest = args[0], args[1:]
    if op == "create":
        return _create(ctx, rest)
    if op == "add":
        return _add(ctx, rest)
    if op == "commit":
        return _commit(ctx, rest)
    if op == "list":
        return _list(ctx, rest)
    raise FimError(f"Invalid op '{op}' for 'fim-layer' (create,add,commit,list)")


def _paths(ctx: Context) -> instance.Paths:
    return instance.paths(ctx.image, ctx.dir_global, ctx.header.build_id, os.getpid())


def _enter() -> None:
    # Rootless, the caller becomes 0 over its own files: mksquashfs then reads
    # files the container made unreadable, records them as root (as the
    # container saw them), and clearing the upper dir can remove them.
    namespaces.enter(os.getuid(), os.getgid(), pid=False)


def _create(ctx: Context, rest: List[str]) -> int:
    if len(rest) != 2:
        raise FimError("create requires exactly two arguments (/path/to/dir /path/to/file.layer)")
    source, output = rest
    if not os.path.lexists(source):
        raise FimError(f"Source directory '{source}' does not exist")
    if not os.path.isdir(source):
        raise FimError(f"Source '{source}' is not a directory")
    if os.path.lexists(output):
        raise FimError(f"Output file '{output}' already exists")
    level = compression_level(ctx.environ)
    paths = _paths(ctx)
    print("Gathering files to compress", flush=True)
    lock = None
    if os.path.realpath(source) == os.path.realpath(paths.dir_upper):
        # The image's own upper dir: bring its deletions to the form layers keep.
        from fim.runtime.overlays import upperdir

        lock = upperdir.canonicalize(_state(paths), paths.dir_upper)
    try:
        _enter()
        tmp = _beside(output)
        try:
            build.create(source, tmp, level, paths.dir_runtime, ctx.environ, _log(paths))
            build.place(tmp, output)
        finally:
            _discard(tmp)
    finally:
        if lock is not None:
            os.close(lock)
    print("Filesystem created without errors")
    return 0


def _add(ctx: Context, rest: List[str]) -> int:
    if len(rest) != 1:
        raise FimError("add requires exactly one argument (/path/to/file.layer)")
    path = rest[0]
    if not os.path.isfile(path):
        raise FimError(f"Layer file '{path}' does not exist")
    if detect(path) is None:
        raise FimError(f"'{path}' is not a layer (SquashFS or DwarFS)")
    chain.append(ctx.image, ctx.header, path)
    print(f"Included novel layer from file '{path}'")
    return 0


def _commit(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError("Missing argument for 'commit' (binary,layer,file)")
    mode, extra = rest[0], rest[1:]
    if mode not in ("binary", "layer", "file"):
        raise FimError(f"Invalid argument for 'commit': '{mode}' (binary,layer,file)")
    if mode == "file":
        if len(extra) != 1:
            raise FimError("commit file requires exactly one argument (/path/to/file.layer)")
        destination = os.path.abspath(extra[0])
        if os.path.lexists(destination):
            raise FimError(f"File '{destination}' already exists")
    elif extra:
        raise trailing(f"fim-layer commit {mode}", extra)
    level = compression_level(ctx.environ)
    paths = _paths(ctx)
    if mode == "layer":
        build.next_managed(paths.dir_layers)  # refuse past 999 before any work
    from fim.runtime.overlays import upperdir

    os.makedirs(paths.dir_upper, exist_ok=True)
    lock = upperdir.canonicalize(_state(paths), paths.dir_upper)
    try:
        _enter()
        tmp = _temporary(paths, "commit")
        try:
            build.create(paths.dir_upper, tmp, level, paths.dir_runtime, ctx.environ,
                         _log(paths))
            if mode == "binary":
                chain.append(ctx.image, ctx.header, tmp)
                print("Filesystem appended to binary without errors", flush=True)
            elif mode == "layer":
                os.makedirs(paths.dir_layers, exist_ok=True)
                while True:
                    destination = build.next_managed(paths.dir_layers)
                    try:
                        build.place(tmp, destination)
                        break
                    except FileExistsError:
                        continue  # another commit took the number
                print(f"Layer saved to '{destination}'", flush=True)
            else:
                # Built in the data dir, copied beside the destination, then linked.
                staged = _beside(destination)
                try:
                    _copy(tmp, staged)
                    build.place(staged, destination)
                finally:
                    _discard(staged)
                print(f"Layer saved to '{destination}'", flush=True)
        finally:
            _discard(tmp)
        # Only now, with the layer durably in place, may the changes go.
        build.clear(paths.dir_upper)
        print("Finished erasing files")
    finally:
        os.close(lock)
    return 0


def _list(ctx: Context, rest: List[str]) -> int:
    if rest:
        raise trailing("fim-layer list", rest)
    paths = _paths(ctx)
    fd = os.open(ctx.image, os.O_RDONLY)
    try:
        layers, _torn = config.layer_list(fd, ctx.header, paths, ctx.environ)
    finally:
        os.close(fd)
    for layer in layers:
        print(f"{layer.index}:{layer.offset}:{layer.size}:{layer.path}")
    return 0


def _state(paths: instance.Paths) -> str:
    return os.path.join(paths.dir_data, "overlay.state")


def _log(paths: instance.Paths) -> str:
    os.makedirs(os.path.join(paths.dir_data, "tmp"), exist_ok=True)
    return os.path.join(paths.dir_data, "tmp", "mksquashfs.log")


def _temporary(paths: instance.Paths, hint: str) -> str:
    tmpdir = os.path.join(paths.dir_data, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    return os.path.join(tmpdir, f".{hint}.{os.getpid()}.partial")


def _beside(destination: str) -> str:
    """A temporary name on the destination's filesystem, so placing it is a link."""
    directory, name = os.path.split(os.path.abspath(destination))
    return os.path.join(directory, f".{name}.{os.getpid()}.partial")


def _copy(source: str, destination: str) -> None:
    with open(source, "rb") as src, open(destination, "wb") as dst:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

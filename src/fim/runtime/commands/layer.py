"""fim-layer create DIR FILE | add FILE | commit <binary|layer|file PATH> | list | verify |
extract INDEX DIR"""

from __future__ import annotations

import os

from fim.runtime import config
from fim.runtime.commands import Context, say
from fim.runtime.errors import FimError, trailing
from fim.runtime.layers import commit, compression_level, verify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-layer' (create,add,commit,list)")
    op, rest = args[0].lower(), args[1:]
    if op == "create":
        return _create(ctx, rest)
    if op == "add":
        return _add(ctx, rest)
    if op == "commit":
        return _commit(ctx, rest)
    if op == "list":
        return _list(ctx, rest)
    if op == "verify":
        return _verify(ctx, rest)
    if op == "extract":
        return _extract(ctx, rest)
    raise FimError("Invalid layer operation")


def _create(ctx: Context, rest: List[str]) -> int:
    """FlatImage's order: the arguments, `Gathering files to compress`, then the source.
    An existing output file is replaced, as FlatImage's does (once the new layer is
    complete); the image itself or a directory is refused."""
    if len(rest) != 2:
        raise FimError("create requires exactly two arguments (/path/to/dir /path/to/file.layer)")
    source, output = rest
    say("Gathering files to compress")
    if not os.path.lexists(source):
        raise FimError(f"Source directory '{source}' does not exist")
    if not os.path.isdir(source):
        raise FimError(f"Source '{source}' is not a directory")
    if os.path.isdir(output):
        raise FimError(f"Output '{output}' is a directory")
    if os.path.exists(output) and os.path.samefile(output, ctx.image.path):
        raise FimError(f"Output '{output}' is the image itself")
    level = compression_level(ctx.environ)
    commit.create(ctx.paths, ctx.environ, source, output, level, say)
    return 0


def _add(ctx: Context, rest: List[str]) -> int:
    if len(rest) != 1:
        raise FimError("add requires exactly one argument (/path/to/file.layer)")
    commit.add(ctx.image, rest[0])
    print(f"Included novel layer from file '{rest[0]}'")
    return 0


def _commit(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError("Missing op for 'commit' (binary,layer,file)")
    mode, extra = rest[0].lower(), rest[1:]
    if mode not in (commit.BINARY, commit.MANAGED, commit.FILE):
        raise FimError("Invalid commit operation")
    destination: Optional[str] = None
    if mode == commit.FILE:
        if not extra:
            raise FimError("Missing path for 'file' operation")
        destination, extra = os.path.abspath(extra[0]), extra[1:]
    if extra:
        raise trailing("fim-layer commit", extra)
    # Checked before compressing (FlatImage looks after): nothing is cleared for naught.
    if destination is not None and os.path.lexists(destination):
        raise FimError("Destination file already exists")
    level = compression_level(ctx.environ)
    commit.commit(ctx.image, ctx.paths, ctx.environ, mode, destination, level, say)
    return 0


def _list(ctx: Context, rest: List[str]) -> int:
    if rest:
        raise trailing("fim-layer list", rest)
    layers, _torn = config.layer_list(ctx.image, ctx.paths, ctx.environ)
    for layer in layers:
        print(f"{layer.index}:{layer.offset}:{layer.size}:{layer.path}")
    return 0


def _verify(ctx: Context, rest: List[str]) -> int:
    """Every layer checked against its digest now: `index:offset:size:path: state`
    (ok, damaged, no digest, ...); exit code 1 when any is damaged."""
    if rest:
        raise trailing("fim-layer verify", rest)
    layers, _torn = config.layer_list(ctx.image, ctx.paths, ctx.environ)
    results = verify.report(layers, ctx.paths)
    bad = [layer for layer, state in results if state not in verify.PASSING]
    for layer, state in results:
        print(f"{layer.index}:{layer.offset}:{layer.size}:{layer.path}: {verify.describe(state)}")
    if bad:
        listed = ",".join(str(layer.index) for layer in bad)
        raise FimError(f"{len(bad)} of {len(results)} layers are damaged ({listed})", 1)
    return 0


def _extract(ctx: Context, rest: List[str]) -> int:
    """One layer's own tree (its deletion markers included) written to a new directory."""
    from fim.runtime.errors import debug_enabled, warn
    from fim.runtime.layers import extract

    if len(rest) != 2:
        raise FimError("extract requires exactly two arguments (INDEX /path/to/dir)")
    index, dest = rest
    layers, _torn = config.layer_list(ctx.image, ctx.paths, ctx.environ)
    chosen = [layer for layer in layers if str(layer.index) == index]
    if not chosen:
        known = f"0-{len(layers) - 1}" if layers else "none"
        raise FimError(f"No layer '{index}' (layers: {known}; see fim-layer list)")
    result = extract.extract(chosen[0], dest, ctx.paths, ctx.environ,
                             debug_enabled(ctx.environ))
    if result.owners_lost:
        warn(f"{result.owners_lost} entries are yours: their owners are ids this user "
             "cannot map (subordinate ids, or root, keep them)")
    if result.devices_skipped:
        warn(f"Left out {len(result.devices_skipped)} device nodes "
             f"(/{result.devices_skipped[0]}...): only root makes them")
    if result.xattrs_lost:
        warn(f"{result.xattrs_lost} extended attributes could not be set in '{dest}'")
    say(f"Layer {index} extracted to '{dest}' ({result.entries} entries)")
    return 0

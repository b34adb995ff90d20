"""fim-bind add <ro|rw|dev> SRC DST | del INDEX | list

FlatImage's texts and order of checks: the type is read before the argument count
is known (`fim-bind add bogus` is an invalid type, not a short command); deleting
an index that is not there says so and changes nothing; `list` is FlatImage's
JSON object of bindings by index, nothing when there are none."""

from __future__ import annotations

import json

from fim.runtime.commands import Context
from fim.runtime.errors import FimError
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

ADD_USAGE = "Incorrect number of arguments for 'add' (<ro,rw,dev> <src> <dst>)"
DEL_USAGE = "Incorrect number of arguments for 'del' (<index>)"


def _add(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError(ADD_USAGE)
    kind = rest[0].lower()
    if kind not in settings.BIND_TYPES:
        raise FimError("Invalid bind type")
    if len(rest) != 3:
        raise FimError(ADD_USAGE)
    src, dst = rest[1:]
    # bubblewrap refuses a relative destination at every run; say it once, now.
    if not dst.startswith("/"):
        raise FimError(f"Destination '{dst}' must be an absolute path")
    bindings = ctx.image.read(settings.BINDINGS)
    bindings.append(settings.Binding(kind, src, dst))
    ctx.image.write(settings.BINDINGS, bindings)
    print(f"Binding index is '{len(bindings) - 1}'")
    return 0


def _del(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError(DEL_USAGE)
    if not rest[0].isascii() or not rest[0].isdigit():
        raise FimError("Index argument for 'del' is not a number")
    if rest[1:]:
        raise FimError(DEL_USAGE)
    index = int(rest[0])
    bindings = ctx.image.read(settings.BINDINGS)
    if index >= len(bindings):
        print(f"No element with index '{index}' found")
        return 0
    del bindings[index]  # the ones after it move down, as FlatImage renumbers them
    ctx.image.write(settings.BINDINGS, bindings)
    print(f"Erase element with index '{index}'")
    return 0


def listing(bindings: List[settings.Binding]) -> str:
    """FlatImage's form: {"0": {"dst": ..., "src": ..., "type": ...}, ...}, two spaces,
    keys sorted as strings ("10" before "2", as its JSON library sorts them)."""
    listed = {str(i): {"type": b.kind, "src": b.src, "dst": b.dst}
              for i, b in enumerate(bindings)}
    return json.dumps(listed, indent=2, sort_keys=True, ensure_ascii=False)


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-bind' command (add,del,list)")
    op, rest = args[0].lower(), args[1:]
    if op == "add":
        return _add(ctx, rest)
    if op == "del":
        return _del(ctx, rest)
    if op == "list":
        if rest:
            raise FimError("'list' command takes no arguments")
        bindings = ctx.image.read(settings.BINDINGS)
        if bindings:
            print(listing(bindings))
        return 0
    raise FimError("Invalid bind operation")

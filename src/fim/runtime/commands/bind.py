"""fim-bind add <ro|rw|dev> SRC DST | del INDEX | list"""

from __future__ import annotations

import json

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-bind' (add,del,list)")
    op, rest = args[0], args[1:]
    if op == "add":
        if len(rest) != 3:
            raise FimError("Incorrect number of arguments for 'add' (<ro,rw,dev> <src> <dst>)")
        kind, src, dst = rest
        if kind not in settings.BIND_TYPES:
            raise FimError("Invalid bind type")
        if not dst.startswith("/"):
            raise FimError(f"Destination '{dst}' must be an absolute path")
        bindings = ctx.image.read(settings.BINDINGS)
        bindings.append(settings.Binding(kind, src, dst))
        ctx.image.write(settings.BINDINGS, bindings)
        print(f"Binding index is '{len(bindings) - 1}'")
        return 0
    if op == "del":
        if len(rest) != 1:
            raise FimError("Incorrect number of arguments for 'del' (<index>)")
        bindings = ctx.image.read(settings.BINDINGS)
        if not rest[0].isdigit() or int(rest[0]) >= len(bindings):
            raise FimError(f"Invalid binding index '{rest[0]}'")
        del bindings[int(rest[0])]
        ctx.image.write(settings.BINDINGS, bindings)
        return 0
    if op == "list":
        if rest:
            raise trailing("fim-bind", rest)
        bindings = ctx.image.read(settings.BINDINGS)
        listed = {str(i): {"type": b.kind, "src": b.src, "dst": b.dst}
                  for i, b in enumerate(bindings)}
        print(json.dumps(listed, indent=2))
        return 0
    raise FimError(f"Invalid op '{op}' for 'fim-bind' (add,del,list)")

"""fim-perms add|del|set <p1,p2,...> | list | clear, and fim-unshare likewise."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import PERMISSIONS, UNSHARE, Bits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def _edit(ctx: Context, args: List[str], command: str, codec: Bits) -> int:
    if not args:
        raise FimError(f"Missing op for '{command}' (add,del,set,list,clear)")
    op, rest = args[0], args[1:]
    if op in ("add", "del", "set"):
        if not rest:
            raise FimError(f"Missing argument for '{op}'")
        if rest[1:]:
            raise trailing(command, rest[1:])
        bits = codec.parse(rest[0])
        current = ctx.image.read(codec)
        value = {"add": current | bits, "del": current & ~bits, "set": bits}[op]
        ctx.image.write(codec, value)
        return 0
    if op in ("list", "clear"):
        if rest:
            raise trailing(command, rest)
        if op == "clear":
            ctx.image.write(codec, 0)
            return 0
        for name in codec.named(ctx.image.read(codec)):
            print(name)
        return 0
    raise FimError(f"Invalid op '{op}' for '{command}' (add,del,set,list,clear)")


def perms(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, "fim-perms", PERMISSIONS)


def unshare(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, "fim-unshare", UNSHARE)

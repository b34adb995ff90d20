"""fim-perms add|del|set <p1,p2,...> | list | clear, and fim-unshare likewise."""

from __future__ import annotations

from fim.runtime import settings
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence


def _edit(ctx: Context, args: List[str], command: str, region: str, known: Sequence[str],
          what: str) -> int:
    if not args:
        raise FimError(f"Missing op for '{command}' (add,del,set,list,clear)")
    op, rest = args[0], args[1:]
    if op in ("add", "del", "set"):
        if not rest:
            raise FimError(f"Missing argument for '{op}'")
        if rest[1:]:
            raise trailing(command, rest[1:])
        bits = settings.parse_list(rest[0], known, what)
        current = settings.read_bits(ctx.image, ctx.header, region)
        value = {"add": current | bits, "del": current & ~bits, "set": bits}[op]
        settings.write_bits(ctx.image, ctx.header, region, value)
        return 0
    if op in ("list", "clear"):
        if rest:
            raise trailing(command, rest)
        if op == "clear":
            settings.write_bits(ctx.image, ctx.header, region, 0)
            return 0
        bits = settings.read_bits(ctx.image, ctx.header, region)
        for name in settings.bits_to_names(bits, known):
            print(name)
        return 0
    raise FimError(f"Invalid op '{op}' for '{command}' (add,del,set,list,clear)")


def perms(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, "fim-perms", "permissions", settings.PERMISSIONS, "permission")


def unshare(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, "fim-unshare", "unshare", settings.NAMESPACES, "namespace")

"""fim-perms add|del|set <p1,p2,...> | list | clear, and fim-unshare likewise.

FlatImage's texts and order of checks: the operation, its argument, each name, the
trailing arguments, then whether `all` stands alone (docs/compatibility.md)."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import PERMISSIONS, UNSHARE, Bits
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


@dataclass(frozen=True)
class Words:
    """What FlatImage calls an edited bit field in its messages."""

    command: str
    ops: str  # as its missing-operation message lists them
    short: str  # its name in the invalid-operation message


PERMS = Words("fim-perms", "add,del,list,set,clear", "perms")
UNSHARES = Words("fim-unshare", "add,clear,del,list,set", "unshare")


def _edit(ctx: Context, args: List[str], words: Words, codec: Bits) -> int:
    if not args:
        raise FimError(f"Missing op for {words.command} ({words.ops})")
    op, rest = args[0].lower(), args[1:]
    if op in ("add", "del", "set"):
        if not rest:
            raise FimError(f"No arguments for '{op.upper()}' command")
        names = codec.check(rest[0])
        if rest[1:]:
            raise trailing(words.command, rest[1:])
        bits = codec.bits(names)
        current = ctx.image.read(codec)
        value = {"add": current | bits, "del": current & ~bits, "set": bits}[op]
        ctx.image.write(codec, value)
        return 0
    if op in ("list", "clear"):
        if rest:
            raise trailing(words.command, rest)
        if op == "clear":
            ctx.image.write(codec, 0)
            return 0
        # FlatImage lists a sorted set of names.
        for name in sorted(codec.named(ctx.image.read(codec))):
            print(name)
        return 0
    raise FimError(f"Invalid {words.short} operation")


def perms(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, PERMS, PERMISSIONS)


def unshare(ctx: Context, args: List[str]) -> int:
    return _edit(ctx, args, UNSHARES, UNSHARE)

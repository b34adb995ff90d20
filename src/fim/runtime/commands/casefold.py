"""fim-casefold on|off: the case-insensitive view of the container's root."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import CASEFOLD

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def main(ctx: Context, args: List[str]) -> int:
    # FlatImage's order: the switch is read before any trailing argument is looked at.
    if not args:
        raise FimError("Incorrect number of arguments for 'fim-casefold' (<on|off>)")
    switch = args[0].lower()
    if switch not in ("on", "off"):
        raise FimError("Invalid casefold switch")
    if args[1:]:
        raise trailing("fim-casefold", args[1:])
    ctx.image.write(CASEFOLD, 1 if switch == "on" else 0)
    return 0

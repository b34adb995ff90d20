"""fim-casefold on|off: the case-insensitive view of the container's root."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import CASEFOLD

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing argument for 'fim-casefold' (on,off)")
    if args[1:]:
        raise trailing("fim-casefold", args[1:])
    if args[0] not in ("on", "off"):
        raise FimError(f"Invalid argument for 'fim-casefold': '{args[0]}' (on,off)")
    ctx.image.write(CASEFOLD, 1 if args[0] == "on" else 0)
    return 0

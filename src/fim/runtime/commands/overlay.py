"""fim-overlay set <bwrap|overlayfs|unionfs> | show"""

from __future__ import annotations

from fim.runtime import overlays
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import OVERLAY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

USAGE = "fim-overlay set <bwrap|overlayfs|unionfs> | fim-overlay show"


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-overlay' (set,show)")
    op, rest = args[0], args[1:]
    if op == "set":
        if not rest:
            raise FimError("Missing argument for 'set'")
        backend = overlays.from_option(rest[0])
        if backend is None:
            raise FimError("Invalid overlay type")
        if rest[1:]:
            raise trailing("fim-overlay", rest[1:])
        ctx.image.write(OVERLAY, backend.bit)
        return 0
    if op == "show":
        if rest:
            raise trailing("fim-overlay", rest)
        print(overlays.choose(ctx.environ, ctx.image.read_or(OVERLAY, [])).name)
        return 0
    raise FimError(f"Invalid operation '{op}' for fim-overlay (set,show)")

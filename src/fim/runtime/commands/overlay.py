"""fim-overlay set <bwrap|overlayfs|unionfs> | show"""

from __future__ import annotations

from fim.runtime import overlays
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, debug, debug_enabled, trailing
from fim.runtime.image.settings import CASEFOLD, OVERLAY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

USAGE = "fim-overlay set <bwrap|overlayfs|unionfs> | fim-overlay show"


def _shown(ctx: Context) -> str:
    """The backend that will run (the one asked for, unless casefold turns it into
    another); with FIM_DEBUG, why."""
    stored = ctx.image.read_or(OVERLAY, [])
    chosen = overlays.choose(ctx.environ, stored)
    casefold = ctx.image.read_or(CASEFOLD, []) != 0
    runs = overlays.effective(chosen, casefold)
    if debug_enabled(ctx.environ):
        if overlays.from_option(ctx.environ.get("FIM_OVERLAY", "")) is not None:
            debug(True, f"Overlay asked for: {chosen.name} (FIM_OVERLAY)")
        elif overlays.from_byte(stored) is not None:
            debug(True, f"Overlay asked for: {chosen.name} (fim-overlay set)")
        else:
            debug(True, f"Overlay asked for: {chosen.name} (the default)")
        if runs is not chosen:
            debug(True, f"Overlay that runs: {runs.name} (casefold is on and "
                  f"{chosen.name} cannot stack it)")
    return runs.name


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-overlay' (<set|show>)")
    op, rest = args[0].lower(), args[1:]
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
        print(_shown(ctx))
        return 0
    raise FimError("Invalid overlay operation")

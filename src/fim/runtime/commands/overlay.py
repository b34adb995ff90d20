"""fim-overlay set <bwrap|overlayfs|unionfs> | show"""

from __future__ import annotations

import os

from fim.runtime import overlays
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.reserved import REGIONS, read_region, write_region

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
        name = overlays.NAMES.get(rest[0].lower())
        if name is None:
            raise FimError("Invalid overlay type")
        if rest[1:]:
            raise trailing("fim-overlay", rest[1:])
        value = bytes([overlays.BITS[name]])
        write_region(ctx.image, ctx.header, REGIONS["overlay"], value)
        return 0
    if op == "show":
        if rest:
            raise trailing("fim-overlay", rest)
        fd = os.open(ctx.image, os.O_RDONLY)
        try:
            stored = read_region(fd, ctx.header, REGIONS["overlay"])[0]
        finally:
            os.close(fd)
        print(overlays.choose(ctx.environ, stored))
        return 0
    raise FimError(f"Invalid operation '{op}' for fim-overlay (set,show)")

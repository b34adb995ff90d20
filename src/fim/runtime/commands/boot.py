"""fim-boot set PROGRAM [ARGS...] | show | clear"""

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
        raise FimError("Missing op for 'fim-boot' (set,show,clear)")
    op, rest = args[0], args[1:]
    if op == "set":
        if not rest:
            raise FimError("Missing argument for 'set'")
        ctx.image.write(settings.BOOT, settings.Boot(rest[0], rest[1:]))
        return 0
    if op in ("show", "clear"):
        if rest:
            raise trailing("fim-boot", rest)
        if op == "clear":
            ctx.image.write(settings.BOOT, None)
            return 0
        boot = ctx.image.read(settings.BOOT)
        if boot is not None:
            print(json.dumps({"program": boot.program, "args": boot.args}))
        return 0
    raise FimError(f"Invalid op '{op}' for 'fim-boot' (set,show,clear)")

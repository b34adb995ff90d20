"""fim-boot set PROGRAM [ARGS...] | show | clear"""

from __future__ import annotations

import json

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def default_program(ctx: Context) -> str:
    """What a start without a boot command runs, as `show` names it: the image's SHELL
    from fim-env when it sets one, else bash or sh as the builder found the root
    (FlatImage always says bash; images built before the record say so too)."""
    from fim.runtime.commands.version import build_record

    for entry in ctx.image.read_or(settings.ENVIRONMENT, []):
        key, _, value = entry.partition("=")
        if key == "SHELL" and value.startswith("/"):
            return value
    shell = build_record(ctx.paths.dir_runtime).get("shell")
    return shell if shell in ("bash", "sh") else "bash"


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-boot' (<set|show|clear>)")
    op, rest = args[0].lower(), args[1:]
    if op == "set":
        if not rest:
            raise FimError("Missing program for 'set' operation")
        ctx.image.write(settings.BOOT, settings.Boot(rest[0], rest[1:]))
        return 0
    if op not in ("show", "clear"):
        raise FimError("Invalid boot operation")
    if rest:
        raise trailing("fim-boot", rest)
    if op == "clear":
        ctx.image.write(settings.BOOT, None)
        return 0
    boot = ctx.image.read(settings.BOOT)
    if boot is None:
        boot = settings.Boot(default_program(ctx), [])
    # FlatImage's JSON: two spaces, keys sorted ("args" before "program").
    print(json.dumps({"program": boot.program, "args": boot.args}, indent=2, sort_keys=True,
                     ensure_ascii=False))
    return 0

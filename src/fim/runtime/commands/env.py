"""fim-env add|set 'K=V'... | del K... | list | clear"""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def _check(entry: str) -> str:
    key, sep, _ = entry.partition("=")
    if not sep or not key or not (key[0].isalpha() or key[0] == "_") or \
            not all(c.isalnum() or c == "_" for c in key):
        raise FimError(f"Invalid environment entry '{entry}' (expected 'NAME=value')")
    return key


def _merge(entries: List[str], new: List[str]) -> List[str]:
    keys = {_check(e) for e in new}
    return [e for e in entries if e.partition("=")[0] not in keys] + new


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-env' (add,set,del,list,clear)")
    op, rest = args[0], args[1:]
    if op in ("add", "set"):
        if not rest:
            raise FimError(f"Missing argument for '{op}'")
        for entry in rest:
            _check(entry)
        current = ctx.image.read(settings.ENVIRONMENT) if op == "add" else []
        ctx.image.write(settings.ENVIRONMENT, _merge(current, rest))
        return 0
    if op == "del":
        if not rest:
            raise FimError("Missing argument for 'del'")
        current = ctx.image.read(settings.ENVIRONMENT)
        kept = [e for e in current if e.partition("=")[0] not in rest]
        ctx.image.write(settings.ENVIRONMENT, kept)
        return 0
    if op in ("list", "clear"):
        if rest:
            raise trailing("fim-env", rest)
        if op == "clear":
            ctx.image.write(settings.ENVIRONMENT, [])
            return 0
        for entry in ctx.image.read(settings.ENVIRONMENT):
            print(entry)
        return 0
    raise FimError(f"Invalid op '{op}' for 'fim-env' (add,set,del,list,clear)")

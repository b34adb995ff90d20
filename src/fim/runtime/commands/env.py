"""fim-env add|set 'K=V'... | del K... | list | clear, with FlatImage's texts: each
entry stored or erased is said on stdout (`Included variable 'K' with value 'V'`,
`Erase key 'K'`), and `list` prints the entries sorted by name with their values
expanded, as FlatImage's JSON object of variables lists them."""

from __future__ import annotations

from fim.runtime import sandbox
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

OPS = ("add", "set", "del", "list", "clear")


def _check(entry: str) -> str:
    """FlatImage wants an `=`; fim also wants a name the container's environment can
    hold (bubblewrap sets it as given), so a wrong one gets FlatImage's line too."""
    key, sep, _ = entry.partition("=")
    if not sep or not key or not (key[0].isalpha() or key[0] == "_") or \
            not all(c.isalnum() or c == "_" for c in key):
        raise FimError(f"Variable assignment '{entry}' is invalid")
    return key


def _merge(entries: List[str], new: List[str]) -> List[str]:
    """`new` replaces the entries of its names; of a name given twice, the last."""
    last = {e.partition("=")[0]: e for e in new}
    kept = [e for e in entries if e.partition("=")[0] not in last]
    return kept + list(last.values())


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-env' (add,del,list,set,clear)")
    op, rest = args[0].lower(), args[1:]
    if op not in OPS:
        raise FimError("Invalid env operation")
    if op in ("add", "set", "del") and not rest:
        raise FimError(f"Missing arguments for '{op.upper()}'")
    if op in ("add", "set"):
        for entry in rest:
            _check(entry)
        current = ctx.image.read(settings.ENVIRONMENT) if op == "add" else []
        ctx.image.write(settings.ENVIRONMENT, _merge(current, rest))
        for key, _, value in (e.partition("=") for e in _merge([], rest)):
            print(f"Included variable '{key}' with value '{value}'")
        return 0
    if op == "del":
        current = ctx.image.read(settings.ENVIRONMENT)
        names = {e.partition("=")[0] for e in current}
        ctx.image.write(settings.ENVIRONMENT,
                        [e for e in current if e.partition("=")[0] not in rest])
        for key in rest:
            print(f"Erase key '{key}'" if key in names else f"Key '{key}' not found for deletion")
            names.discard(key)
        return 0
    if rest:
        raise trailing("fim-env", rest)
    if op == "clear":
        ctx.image.write(settings.ENVIRONMENT, [])
        return 0
    # Expanded as a run expands them: earlier entries, then the caller's environment.
    values = sandbox.fim_env(ctx.image.read(settings.ENVIRONMENT), ctx.environ)
    for key in sorted(values):
        print(f"{key}={values[key]}")
    return 0

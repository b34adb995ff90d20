"""fim-help [COMMAND]: usage of the image's commands."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

USAGE = {
    "fim-exec": "fim-exec PROGRAM [ARGS...]\n  Run PROGRAM in the container as the calling user.",
    "fim-root": "fim-root PROGRAM [ARGS...]\n  Run PROGRAM in the container as uid 0.",
    "fim-overlay": (
        "fim-overlay set <bwrap|overlayfs|unionfs> | fim-overlay show\n"
        "  Store the overlay type in the image, or print the effective one\n"
        "  (FIM_OVERLAY overrides the stored value for one run)."
    ),
    "fim-help": "fim-help [COMMAND]\n  Print the usage of every command, or of one.",
}


def main(ctx: Context, args: List[str]) -> int:
    if len(args) > 1:
        raise trailing("fim-help", args[1:])
    if args:
        text = USAGE.get(args[0]) or USAGE.get("fim-" + args[0])
        if text is None:
            raise FimError(f"No help for '{args[0]}'")
        print(text)
        return 0
    print("Usage: IMAGE [ARGS...] | IMAGE fim-COMMAND [ARGS...]\n")
    print("\n\n".join(USAGE.values()))
    return 0

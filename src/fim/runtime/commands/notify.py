"""fim-notify on|off: a desktop notification every time the image starts (the notify
byte of the reserved space); sent in the background by desktop/notify.py."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError
from fim.runtime.image.settings import NOTIFY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

USAGE = "Incorrect number of arguments for 'fim-notify' (<on|off>)"


def main(ctx: Context, args: List[str]) -> int:
    # FlatImage's order: the switch is checked before extra arguments are counted.
    if not args:
        raise FimError(USAGE)
    value = args[0].lower()
    if value not in ("on", "off"):
        raise FimError("Invalid notify switch")
    if args[1:]:
        raise FimError(USAGE)
    ctx.image.write(NOTIFY, 1 if value == "on" else 0)
    return 0

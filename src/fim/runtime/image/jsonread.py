"""JSON reading without the json module on the start-up path.

`import json` imports `re` and `enum` (7-10 ms here, on every start of an image
with any fim-env, fim-bind or fim-boot setting). The C scanner the json module
itself uses, `_json.make_scanner`, needs neither: it reads a value given an object
with the decoder's options. Errors go through json's own JSONDecodeError (the C
scanner imports json.decoder for them): a ValueError, as json.loads raises.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Options:
    """What the scanner reads of a decoder: json.loads' defaults."""

    strict = True
    object_hook: Optional[Callable[..., Any]] = None
    object_pairs_hook: Optional[Callable[..., Any]] = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def loads(text: str) -> Any:
    """json.loads(text) for the values fim stores (no hooks)."""
    scan = _json.make_scanner(_Options())  # type: ignore[arg-type]  # duck-typed options
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = scan(text, start)
    except (StopIteration, SystemError):
        # SystemError: the C scanner, cut off inside a string (`{"`), may return NULL
        # with no exception set instead of raising JSONDecodeError.
        raise ValueError(f"Expecting value at {start}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data at {end}")
    return value

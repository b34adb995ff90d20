"""fim-remote set URL | show | clear: where fim-recipe fetches recipes from."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def check_url(url: str) -> str:
    """http(s) with a host; stored as given (a trailing slash is dropped when a recipe's
    URL is made, as FlatImage does)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
            or any(c.isspace() for c in url):
        raise FimError(f"Invalid remote URL '{url}': an http:// or https:// URL is needed")
    return url


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-remote' (<set|show|clear>)")
    op, rest = args[0].lower(), args[1:]
    if op == "set":
        if not rest:
            raise FimError("Missing URL for 'set' operation")
        if len(rest) > 1:
            raise trailing("fim-remote", rest[1:])
        ctx.image.write(settings.REMOTE, check_url(rest[0]))
        print(f"Set remote URL to '{rest[0]}'")  # FlatImage says what it stored
        return 0
    if op not in ("show", "clear"):
        raise FimError("Invalid remote operation")
    if rest:
        raise trailing("fim-remote", rest)
    if op == "clear":
        ctx.image.write(settings.REMOTE, None)
        print("Cleared remote URL")
        return 0
    url = ctx.image.read(settings.REMOTE)
    if not url:
        raise FimError("No remote URL configured")
    print(url)
    return 0

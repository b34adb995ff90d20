"""fim-desktop setup FILE.json | enable entry,mimetype,icon|none | clean
| dump icon FILE | dump entry | dump mimetype

FlatImage v2.0.1's commands and texts (docs/compatibility.md): its messages, the
values checked before the trailing arguments, setup printing the JSON it stored in
FlatImage's layout (the icon path is not stored: the icon has a region of its
own), enable printing what it enabled, one per line. The files themselves are
installed by the next run (desktop/__init__.py).
"""

from __future__ import annotations

import sys

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, debug_enabled, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

OPS = "enable,setup,clean,dump"
ENABLE_NAMES = ("entry", "mimetype", "icon", "none")


def _set_up(ctx: Context) -> settings.Desktop:
    desktop = ctx.image.read(settings.DESKTOP)
    if desktop is None:
        raise FimError("Desktop integration is not set up (fim-desktop setup FILE.json)")
    assert isinstance(desktop, settings.Desktop)
    return desktop


def _setup(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError("Missing argument for 'setup' (/path/to/file.json)")
    if rest[1:]:
        raise trailing("fim-desktop", rest[1:])
    from fim.runtime.desktop import setup

    ctx.image.check_writable()
    prepared = setup.load(rest[0])  # every field and the icon checked before a write
    ctx.image.write(settings.ICON, prepared.icon)
    ctx.image.write(settings.DESKTOP, prepared.desktop)
    import json

    # FlatImage's JSON layout: two spaces, sorted keys (docs/compatibility.md).
    stored = json.loads(settings.DESKTOP.encode(prepared.desktop))
    print(json.dumps(stored, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def parse_enable(text: str) -> List[str]:
    """`entry,mimetype,icon` (any of them) or `none` alone, as stored names."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise FimError(f"Missing arguments for 'enable' ({','.join(ENABLE_NAMES)})")
    for name in names:
        if name not in ENABLE_NAMES:
            raise FimError("Invalid integration item")
    if "none" in names:
        if len(names) > 1:
            raise FimError("'none' option should not be used with others")
        return []
    return [i for i in settings.INTEGRATIONS if i.lower() in names]


def _enable(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError(f"Missing arguments for 'enable' ({','.join(ENABLE_NAMES)})")
    wanted = parse_enable(rest[0])
    if rest[1:]:
        raise trailing("fim-desktop", rest[1:])
    desktop = _set_up(ctx)
    from fim.runtime.record import replace

    ctx.image.write(settings.DESKTOP, replace(desktop, integrations=tuple(wanted)))
    for name in wanted:
        print(name)
    return 0


def _clean(ctx: Context, rest: List[str]) -> int:
    if rest:
        raise trailing("fim-desktop", rest)
    from fim.runtime.desktop import data_home, install

    root = data_home(ctx.environ)
    if root is None:
        return 0  # no place was ever integrated into
    install.clean(root, ctx.image.header.build_id, ctx.environ,
                  install.Say(debug_enabled(ctx.environ)))
    return 0


def _dump_icon(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError("Missing argument for 'icon' /path/to/dump/file")
    if rest[1:]:
        raise trailing("fim-desktop", rest[1:])
    icon = ctx.image.read(settings.ICON)
    if icon is None:
        raise FimError("Empty icon data")
    path = rest[0]
    if not path.lower().endswith("." + icon.kind):
        path += "." + icon.kind
    try:
        with open(path, "wb") as f:
            f.write(icon.data)
    except OSError as e:
        raise FimError(f"Could not open output file '{path}': {e.strerror}") from None
    return 0


def _dump(ctx: Context, rest: List[str]) -> int:
    if not rest:
        raise FimError("Missing arguments for 'dump' (entry,mimetype,icon)")
    what = rest[0].lower()
    if what == "icon":
        return _dump_icon(ctx, rest[1:])
    if what not in ("entry", "mimetype"):
        raise FimError("Invalid dump operation")
    if rest[1:]:
        raise trailing("fim-desktop", rest[1:])
    from fim.runtime.desktop import layout

    desktop = _set_up(ctx)
    if what == "mimetype":
        sys.stdout.write(layout.package(desktop, ctx.image.path))
        return 0
    problem = layout.entry_problem(ctx.image.path)
    if problem:
        raise FimError(f"No desktop entry can run '{ctx.image.path}': {problem}")
    with_icon = "ICON" in desktop.integrations and ctx.image.read(settings.ICON) is not None
    sys.stdout.write(layout.entry(desktop, ctx.image.path, with_icon,
                                  "MIMETYPE" in desktop.integrations))
    return 0


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError(f"Missing op for 'fim-desktop' ({OPS})")
    op, rest = args[0].lower(), args[1:]
    handler = {"setup": _setup, "enable": _enable, "clean": _clean, "dump": _dump}.get(op)
    if handler is None:
        raise FimError("Invalid desktop operation")
    return handler(ctx, rest)

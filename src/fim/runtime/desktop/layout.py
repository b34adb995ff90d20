"""What the integration installs, where, with which content: FlatImage's file names
under $XDG_DATA_HOME, the desktop entry and the MIME packages.

Everything here is a pure function of the settings, the icon files made from the
icon region and the image's path: `install.py` writes what `plan` gives.
"""

from __future__ import annotations

import os

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional

    from fim.runtime.image.settings import Desktop, Icon

# FlatImage's hicolor sizes for a PNG icon.
SIZES = (16, 22, 24, 32, 48, 64, 96, 128, 256)
GENERIC_TYPE = "application/flatimage"
GENERIC_PACKAGE = "mime/packages/flatimage.xml"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")


@dataclass(frozen=True)
class Planned:
    rel: str  # under $XDG_DATA_HOME
    data: bytes


def app_id(name: str) -> str:
    """The name as it appears in file names, MIME types and icon names: FlatImage uses
    the name itself; characters a MIME type or a file name cannot hold become '_'."""
    return "".join(c if c in _ID_CHARS else "_" for c in name)


def mime_type(name: str) -> str:
    return f"application/flatimage_{app_id(name)}"


def entry_path(name: str) -> str:
    return f"applications/flatimage-{app_id(name)}.desktop"


def package_path(name: str) -> str:
    return f"mime/packages/flatimage-{app_id(name)}.xml"


def icon_paths(name: str, kind: str) -> Dict[str, int]:
    """The icon files (app and MIME type), each with its size (0: scalable)."""
    ident = app_id(name)
    if kind == "svg":
        return {f"icons/hicolor/scalable/apps/flatimage_{ident}.svg": 0,
                f"icons/hicolor/scalable/mimetypes/application-flatimage_{ident}.svg": 0}
    found = {}
    for size in SIZES:
        found[f"icons/hicolor/{size}x{size}/apps/flatimage_{ident}.png"] = size
        found[f"icons/hicolor/{size}x{size}/mimetypes/application-flatimage_{ident}.png"] = size
    return found


def notify_icon(name: str, kind: str) -> str:
    """The installed icon a notification shows (relative)."""
    ident = app_id(name)
    if kind == "svg":
        return f"icons/hicolor/scalable/apps/flatimage_{ident}.svg"
    return f"icons/hicolor/64x64/apps/flatimage_{ident}.png"


# -- the desktop entry ------------------------------------------------------------


def _escape_value(text: str) -> str:
    """A string value of a desktop entry (the specification's \\s \\n \\t \\r \\\\)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r") \
        .replace("\n", "\\n")


def exec_argument(path: str) -> str:
    """`path` as one quoted argument of an Exec key: inside the quotes ", `, $ and \\
    take a backslash, a field code's % is doubled; then the value's own escaping."""
    quoted = "".join("\\" + c if c in '"`$\\' else c for c in path).replace("%", "%%")
    return _escape_value(f'"{quoted}"')


def categories(desktop: Desktop) -> List[str]:
    """The entry's categories: Audio and Video require AudioVideo (FlatImage's own
    example gives Audio alone, which desktop-file-validate reports as an error)."""
    found = list(desktop.categories)
    if ("Audio" in found or "Video" in found) and "AudioVideo" not in found:
        found.insert(0, "AudioVideo")
    return found


def entry(desktop: Desktop, image: str, with_icon: bool, with_mime: bool) -> str:
    name = _escape_value(desktop.name)
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        f"Name={name}",
        f'Comment=FlatImage distribution of "{name}"',
        f"Exec={exec_argument(image)} %F",
        # A menu drops the entry of an image that is gone.
        f"TryExec={_escape_value(image)}",
    ]
    if with_icon:
        lines.append(f"Icon=flatimage_{app_id(desktop.name)}")
    if with_mime:
        lines.append(f"MimeType={mime_type(desktop.name)};")
    lines.append(f"Categories={''.join(c + ';' for c in categories(desktop))}")
    return "\n".join(lines) + "\n"


def entry_problem(image: str) -> str:
    """Why no valid entry can run `image` ('' when one can)."""
    if any(ord(c) < 32 for c in image):
        return "its path holds a control character"
    return ""


# -- the MIME packages ------------------------------------------------------------


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
        .replace('"', "&quot;")


def _literal_glob(name: str) -> str:
    """A file name as a glob that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
         '<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">\n')


def package(desktop: Desktop, image: str) -> str:
    """The image's own MIME type: its file name (weight 100, FlatImage's), a kind of
    the generic fim image type."""
    return (_HEAD
            + f'  <mime-type type="{mime_type(desktop.name)}">\n'
            + f"    <comment>{_xml(desktop.name)} (FlatImage application)</comment>\n"
            + f'    <glob weight="100" pattern="{_xml(_literal_glob(os.path.basename(image)))}"/>\n'
            + f'    <sub-class-of type="{GENERIC_TYPE}"/>\n'
            + '    <generic-icon name="application-x-executable"/>\n'
            + "  </mime-type>\n</mime-info>\n")


def generic_package(magic: bytes, offset: int) -> str:
    """Every fim image: `*.flatimage`, or the header's magic where a name says nothing."""
    value = "".join(f"\\x{b:02x}" for b in magic.rstrip(b"\0"))
    return (_HEAD
            + f'  <mime-type type="{GENERIC_TYPE}">\n'
            + "    <comment>FlatImage application</comment>\n"
            + f'    <magic priority="60"><match type="string" value="{value}" '
              f'offset="{offset}"/></magic>\n'
            + '    <glob weight="50" pattern="*.flatimage"/>\n'
            + '    <sub-class-of type="application/x-executable"/>\n'
            + '    <generic-icon name="application-x-executable"/>\n'
            + "  </mime-type>\n</mime-info>\n")


def plan(desktop: Desktop, icon: Optional[Icon], image: str,
         scaled: Callable[[Icon], Dict[int, bytes]]) -> List[Planned]:
    """Every file the enabled integrations install; `scaled` makes the PNG sizes (only
    called when the icon integration has a PNG to install)."""
    from fim.runtime.image.header import HEADER_OFFSET, MAGIC

    wanted = desktop.integrations
    with_icon = "ICON" in wanted and icon is not None
    with_mime = "MIMETYPE" in wanted
    found: List[Planned] = []
    if "ENTRY" in wanted and not entry_problem(image):
        text = entry(desktop, image, with_icon, with_mime)
        found.append(Planned(entry_path(desktop.name), text.encode()))
    if with_mime:
        found.append(Planned(package_path(desktop.name), package(desktop, image).encode()))
        found.append(Planned(GENERIC_PACKAGE, generic_package(MAGIC, HEADER_OFFSET).encode()))
    if with_icon:
        assert icon is not None
        sizes = scaled(icon) if icon.kind == "png" else {}
        for rel, size in icon_paths(desktop.name, icon.kind).items():
            found.append(Planned(rel, icon.data if icon.kind == "svg" else sizes[size]))
    return found

"""`fim-desktop setup FILE.json` and `fim build --desktop`: read FlatImage's desktop
JSON, check every field and the icon, and give the values the regions store.

Everything is checked before anything is written, so a refused file leaves the
image's settings as they were. The icon is a PNG or SVG file (a path relative to
the JSON file), or an http(s) URL fetched within a deadline.
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.image.settings import DESKTOP, ICON, INTEGRATIONS, Desktop, Icon
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List

FIELDS = ("name", "icon", "categories", "integrations")
# The freedesktop menu specification's registered categories (main, then additional),
# as desktop-file-validate knows them; others must start with "X-".
MAIN_CATEGORIES = ("AudioVideo", "Audio", "Video", "Development", "Education", "Game",
                   "Graphics", "Network", "Office", "Science", "Settings", "System",
                   "Utility")
ADDITIONAL_CATEGORIES = (
    "Building", "Debugger", "IDE", "GUIDesigner", "Profiling", "RevisionControl",
    "Translation", "Calendar", "ContactManagement", "Database", "Dictionary", "Chart",
    "Email", "Finance", "FlowChart", "PDA", "ProjectManagement", "Presentation",
    "Spreadsheet", "WordProcessor", "2DGraphics", "VectorGraphics", "RasterGraphics",
    "3DGraphics", "Scanning", "OCR", "Photography", "Publishing", "Viewer", "TextTools",
    "DesktopSettings", "HardwareSettings", "Printing", "PackageManager", "Dialup",
    "InstantMessaging", "Chat", "IRCClient", "Feed", "FileTransfer", "HamRadio", "News",
    "P2P", "RemoteAccess", "Telephony", "TelephonyTools", "VideoConference", "WebBrowser",
    "WebDevelopment", "Midi", "Mixer", "Sequencer", "Tuner", "TV", "AudioVideoEditing",
    "Player", "Recorder", "DiscBurning", "ActionGame", "AdventureGame", "ArcadeGame",
    "BoardGame", "BlocksGame", "CardGame", "KidsGame", "LogicGame", "RolePlaying",
    "Shooter", "Simulation", "SportsGame", "StrategyGame", "Art", "Construction", "Music",
    "Languages", "ArtificialIntelligence", "Astronomy", "Biology", "Chemistry",
    "ComputerScience", "DataVisualization", "Economy", "Electricity", "Geography",
    "Geology", "Geoscience", "History", "Humanities", "ImageProcessing", "Literature",
    "Maps", "Math", "NumericalAnalysis", "MedicalSoftware", "Physics", "Robotics",
    "Spirituality", "Sports", "ParallelComputing", "Amusement", "Archiving", "Compression",
    "Electronics", "Emulator", "Engineering", "FileTools", "FileManager",
    "TerminalEmulator", "Filesystem", "Monitor", "Security", "Accessibility", "Calculator",
    "Clock", "TextEditor", "Documentation", "Adult", "Core", "KDE", "GNOME", "XFCE", "GTK",
    "Qt", "Motif", "Java", "ConsoleOnly",
)
# Reserved categories need an OnlyShowIn key, which an image's entry has no use for.
RESERVED_CATEGORIES = ("Screensaver", "TrayIcon", "Applet", "Shell")
_REGISTERED = frozenset(MAIN_CATEGORIES + ADDITIONAL_CATEGORIES)
MAX_NAME = 128
# Seconds a URL icon may take in all (name lookup, connection, body): a host without
# a network answers at once or not at all, and setup must not hang on it.
FETCH_DEADLINE = 15.0
_SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Prepared:
    desktop: Desktop
    icon: Icon


def _field_error(path: str, message: str) -> FimError:
    return FimError(f"Desktop file '{path}': {message}")


def check_name(name: Any, path: str) -> str:
    if not isinstance(name, str):
        raise _field_error(path, "'name' must be a string")
    if not name.strip():
        raise _field_error(path, "'name' is empty")
    if len(name) > MAX_NAME:
        raise _field_error(path, f"'name' is longer than {MAX_NAME} characters")
    if "/" in name:
        raise _field_error(path, "Application name cannot contain the '/' character")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or name.startswith("."):
        raise _field_error(path, "'name' cannot hold control characters or start with '.'")
    return name


def check_category(category: Any, path: str) -> str:
    if not isinstance(category, str):
        raise _field_error(path, "'categories' must be a list of strings")
    if category in RESERVED_CATEGORIES:
        raise _field_error(path, f"category '{category}' is reserved for desktop "
                                 "environments' own entries")
    if category in _REGISTERED:
        return category
    extension = category[2:]
    if category.startswith("X-") and extension and all(
            c.isascii() and (c.isalnum() or c in "-_.+") for c in extension):
        return category
    raise _field_error(path, f"unknown category '{category}' (see the freedesktop menu "
                             "specification's registry; own ones start with 'X-')")


def check_integrations(value: Any, path: str) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _field_error(path, "'integrations' must be a list of strings")
    found = []
    for item in value:
        if item.upper() not in INTEGRATIONS:
            raise _field_error(path, f"unknown integration '{item}' "
                                     f"({','.join(INTEGRATIONS)})")
        found.append(item.upper())
    return [i for i in INTEGRATIONS if i in found]


def parse(text: str, path: str) -> Dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        raise _field_error(path, f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise _field_error(path, "not a JSON object")
    unknown = [k for k in value if k not in FIELDS]
    if unknown:
        raise _field_error(path, f"unknown field '{unknown[0]}' ({', '.join(FIELDS)})")
    for key in ("name", "icon", "categories"):
        if key not in value:
            raise _field_error(path, f"missing field '{key}'")
    return value


def check_svg(data: bytes) -> str:
    """'' when `data` is a well-formed XML document whose root is `svg`, else what is
    wrong."""
    from xml.parsers import expat

    roots: List[str] = []
    parser = expat.ParserCreate(namespace_separator=" ")

    def start(tag: str, _attrs: object) -> None:
        if not roots:
            roots.append(tag)

    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        return f"not well-formed XML ({e})"
    if not roots:
        return "no root element"
    space, _, local = roots[0].rpartition(" ")
    if local != "svg" or space not in ("", _SVG_NAMESPACE):
        return f"the root element is '{local}', not 'svg'"
    return ""


def check_icon(data: bytes, kind: str, origin: str) -> Icon:
    """The icon's bytes as `kind` (png, svg), checked; one FimError when they are not."""
    if len(data) > ICON.capacity:
        raise FimError(f"Icon '{origin}' is too large: {len(data)} bytes, the icon region "
                       f"holds {ICON.capacity}")
    if kind == "png":
        from fim.runtime.desktop import png

        try:
            png.check(data)
        except png.PngError as e:
            raise FimError(f"Icon '{origin}' is not a valid PNG image: {e}") from None
    else:
        problem = check_svg(data)
        if problem:
            raise FimError(f"Icon '{origin}' is not a valid SVG image: {problem}")
    return Icon(kind, data)


def _kind_of(name: str, data: bytes, origin: str) -> str:
    """png or svg, by the name's extension; by the content when it has none (URLs)."""
    ext = os.path.splitext(name)[1].lower()
    if ext in (".png", ".svg"):
        return ext[1:]
    if ext:
        raise FimError(f"Icon extension '{ext}' is not supported (png, svg): '{origin}'")
    from fim.runtime.desktop import png

    return "png" if data.startswith(png.SIGNATURE) else "svg"


def fetch(url: str, deadline: float = FETCH_DEADLINE) -> bytes:
    """The body at `url`, at most one byte more than an icon may hold; one FimError with
    the cause when the network does not answer, within `deadline` seconds in all."""
    import socket
    import threading
    import urllib.error
    import urllib.request

    result: List[Any] = []
    late = FimError(f"Cannot fetch icon '{url}': no answer within {deadline:.0f} seconds "
                    "(no network?); give a local file instead")

    def get() -> None:
        try:
            with urllib.request.urlopen(url, timeout=deadline) as response:  # noqa: S310 - http(s) only, checked below
                result.append(response.read(ICON.capacity + 1))
        except urllib.error.HTTPError as e:
            result.append(FimError(f"Cannot fetch icon '{url}': HTTP {e.code} {e.reason}"))
        except urllib.error.URLError as e:
            timed_out = isinstance(e.reason, socket.timeout)
            result.append(late if timed_out else FimError(f"Cannot fetch icon '{url}': "
                                                          f"{e.reason}"))
        except socket.timeout:  # TimeoutError from Python 3.10, an OSError before
            result.append(late)
        except (OSError, ValueError) as e:
            result.append(FimError(f"Cannot fetch icon '{url}': {e}"))

    # A thread, so that a name lookup (which no socket timeout covers) cannot hold the
    # command past the deadline either; it is left behind and dies with the process.
    worker = threading.Thread(target=get, daemon=True)
    worker.start()
    worker.join(deadline)
    if not result:
        raise late
    if isinstance(result[0], FimError):
        raise result[0]
    body: bytes = result[0]
    return body


def load_icon(value: Any, json_path: str) -> Icon:
    if not isinstance(value, str) or not value:
        raise _field_error(json_path, "'icon' must be a path to a PNG or SVG file")
    scheme = value.split(":", 1)[0].lower() if "://" in value else ""
    if scheme:
        if scheme not in ("http", "https"):
            raise FimError(f"Icon '{value}': only http and https URLs can be fetched")
        import urllib.parse

        name = urllib.parse.urlsplit(value).path
        _kind_of(name, b"", value)  # a wrong extension is refused before any download
        data = fetch(value)
        return check_icon(data, _kind_of(name, data, value), value)
    path = value if os.path.isabs(value) else os.path.join(
        os.path.dirname(os.path.abspath(json_path)), value)
    kind = _kind_of(path, b"", value)
    try:
        size = os.stat(path).st_size
        if size > ICON.capacity:
            raise FimError(f"Icon '{path}' is too large: {size} bytes, the icon region "
                           f"holds {ICON.capacity}")
        with open(path, "rb") as f:
            data = f.read(ICON.capacity + 1)
    except OSError as e:
        raise FimError(f"Cannot read icon '{path}': {e.strerror}") from None
    return check_icon(data, kind, path)


def load(json_path: str) -> Prepared:
    """The desktop settings and icon of a desktop JSON file, every field checked."""
    try:
        with open(json_path, "rb") as f:
            raw = f.read(DESKTOP.region.size * 16 + 1)
    except OSError as e:
        raise FimError(f"Failed to open file '{json_path}' for desktop integration: "
                       f"{e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _field_error(json_path, "not UTF-8 text") from None
    value = parse(text, json_path)
    name = check_name(value["name"], json_path)
    categories = value["categories"]
    if not isinstance(categories, list):
        raise _field_error(json_path, "'categories' must be a list of strings")
    # FlatImage keeps the categories as a set: sorted, each once.
    checked = sorted({check_category(c, json_path) for c in categories})
    integrations = check_integrations(value.get("integrations", []), json_path)
    desktop = Desktop(name, tuple(checked), tuple(integrations))
    # Its size is checked now, before the icon is written.
    stored = DESKTOP.encode(desktop)
    if len(stored) > DESKTOP.region.size:
        raise _field_error(json_path, f"too large once stored: {len(stored)} bytes, the "
                                      f"desktop region holds {DESKTOP.region.size}")
    return Prepared(desktop, load_icon(value["icon"], json_path))

"""One codec per region of the reserved space: how its bytes read as a setting.

Bit fields are little-endian integers; the JSON regions are UTF-8 JSON ending
at the first NUL of their region (an empty region is the unset value). A
decoder given garbage raises FimError naming the setting: commands that show a
setting print that one `E::` line, runs fall back to the default
(`file.ImageFile.read_or`), so a damaged setting never keeps an image from
starting. Nothing outside this package knows an offset.
"""

from __future__ import annotations

from fim.runtime.errors import FimError
from fim.runtime.image.reserved import REGIONS, Region
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Binding:
    kind: str  # ro, rw or dev
    src: str  # may hold $VARIABLES, expanded at run time
    dst: str


@dataclass(frozen=True)
class Boot:
    program: str
    args: List[str]


def corrupt(region: Region) -> FimError:
    return FimError(f"The '{region.name}' setting of the image is corrupted")


class Bits:
    """A bit field of named bits (bit i = names[i])."""

    text = False

    def __init__(self, region: Region, names: Sequence[str], what: str) -> None:
        self.region = region
        self.names = tuple(names)
        self.what = what  # "permission", "unshare option": FlatImage's nouns, for messages

    def decode(self, raw: bytes) -> int:
        return int.from_bytes(raw, "little")

    def encode(self, value: int) -> bytes:
        return value.to_bytes(self.region.size, "little")

    def default(self) -> int:
        return 0

    def named(self, bits: int) -> List[str]:
        return [name for i, name in enumerate(self.names) if bits & (1 << i)]

    def has(self, bits: int, name: str) -> bool:
        return bool(bits & (1 << self.names.index(name)))

    def check(self, text: str) -> List[str]:
        """`a,b,c` into its names, each one known or `all` (any case; empty items
        skipped, as FlatImage's splitting does). FlatImage names a wrong one in
        capitals, as its enums print them: `Invalid permission 'NONE'`."""
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        for name in names:
            if name != "all" and name not in self.names:
                raise FimError(f"Invalid {self.what} '{name.upper()}'")
        return names

    def bits(self, names: Sequence[str]) -> int:
        """Checked names into bits; `all` stands alone. Separate from `check` because
        FlatImage looks at trailing arguments between the two."""
        if "all" in names:
            if len(names) > 1:
                raise FimError(f"{self.what.capitalize()} 'all' should not be used with others")
            return (1 << len(self.names)) - 1
        bits = 0
        for name in names:
            bits |= 1 << self.names.index(name)
        return bits

    def parse(self, text: str) -> int:
        return self.bits(self.check(text))


class Byte:
    """One byte, as a number (the overlay bitmask) or a flag (casefold, notify)."""

    text = False

    def __init__(self, region: Region) -> None:
        self.region = region

    def decode(self, raw: bytes) -> int:
        return raw[0]

    def encode(self, value: int) -> bytes:
        return bytes([value])

    def default(self) -> int:
        return 0


class Json:
    """A JSON value, checked and turned into records by `load`, back by `dump`."""

    text = True

    def __init__(self, region: Region, load: Any, dump: Any, empty: Any) -> None:
        self.region = region
        self._load = load
        self._dump = dump
        self._empty = empty

    def default(self) -> Any:
        return self._empty()

    def decode(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise corrupt(self.region) from None
        if not text:
            return self._empty()
        from fim.runtime.image import jsonread

        try:
            value = jsonread.loads(text)
        except ValueError:
            raise corrupt(self.region) from None
        try:
            return self._load(value)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise corrupt(self.region) from None

    def encode(self, value: Any) -> bytes:
        plain = self._dump(value)
        if plain is None:
            return b""
        import json

        return json.dumps(plain).encode()


def _load_environment(value: Any) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError("not a list of K=V")
    return value


def _load_bindings(value: Any) -> List[Binding]:
    bindings = [Binding(v["type"], v["src"], v["dst"]) for v in value]
    if not all(b.kind in BIND_TYPES and isinstance(b.src, str) and isinstance(b.dst, str)
               for b in bindings):
        raise ValueError("bad binding")
    return bindings


def _dump_bindings(bindings: List[Binding]) -> Any:
    return [{"type": b.kind, "src": b.src, "dst": b.dst} for b in bindings] or None


def _load_boot(value: Any) -> Optional[Boot]:
    boot = Boot(value["program"], list(value["args"]))
    if not isinstance(boot.program, str) or not all(isinstance(a, str) for a in boot.args):
        raise ValueError("bad boot command")
    return boot


def _dump_boot(boot: Optional[Boot]) -> Any:
    return None if boot is None else {"program": boot.program, "args": boot.args}


def _load_remote(value: Any) -> Optional[str]:
    """FlatImage's form, {"url": URL}; {} is unset."""
    url = value.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError("bad url")
    return url


# Permission bits of the u64 at offset 0, and namespace bits of the u16 `unshare`
# region (FlatImage's orders). Ours come after FlatImage's, which keep their bits:
# `portal` (FlatImage has it always on; here it opens the sandbox, so it is asked for).
PERMISSION_NAMES = (
    "home", "media", "audio", "wayland", "xorg", "dbus_user", "dbus_system", "udev",
    "usb", "input", "gpu", "network", "shm", "optical", "dev", "portal",
)
NAMESPACE_NAMES = ("user", "ipc", "pid", "net", "uts", "cgroup")
BIND_TYPES = ("ro", "rw", "dev")

PERMISSIONS = Bits(REGIONS["permissions"], PERMISSION_NAMES, "permission")
UNSHARE = Bits(REGIONS["unshare"], NAMESPACE_NAMES, "unshare option")
OVERLAY = Byte(REGIONS["overlay"])  # 1<<1 BWRAP, 1<<2 OVERLAYFS, 1<<3 UNIONFS, 0 unset
CASEFOLD = Byte(REGIONS["casefold"])
ENVIRONMENT = Json(REGIONS["environment"], _load_environment, lambda v: v or None, list)
BINDINGS = Json(REGIONS["bindings"], _load_bindings, _dump_bindings, list)
BOOT = Json(REGIONS["boot"], _load_boot, _dump_boot, lambda: None)
REMOTE = Json(REGIONS["remote"], _load_remote, lambda url: {"url": url} if url else None,
              lambda: None)


# -- desktop integration (runtime/desktop/) ---------------------------------------

# FlatImage's integration names, in the order they are stored and installed.
INTEGRATIONS = ("ENTRY", "MIMETYPE", "ICON")


@dataclass(frozen=True)
class Desktop:
    """FlatImage's desktop JSON without its icon path (the icon has a region of its
    own): {"name": ..., "integrations": [...], "categories": [...]}."""

    name: str
    categories: Tuple[str, ...]
    integrations: Tuple[str, ...]  # of INTEGRATIONS, in their order; () for none


@dataclass(frozen=True)
class Icon:
    kind: str  # "png" or "svg", FlatImage's extension field
    data: bytes


def _load_desktop(value: Any) -> Optional[Desktop]:
    name, categories = value["name"], value["categories"]
    integrations = value.get("integrations", [])
    if not isinstance(name, str) or not name or not isinstance(categories, list) or \
            not isinstance(integrations, list):
        raise ValueError("bad desktop")
    if not all(isinstance(c, str) for c in categories) or \
            not all(i in INTEGRATIONS for i in integrations):
        raise ValueError("bad desktop")
    return Desktop(name, tuple(categories), tuple(i for i in INTEGRATIONS if i in integrations))


def _dump_desktop(desktop: Optional[Desktop]) -> Any:
    if desktop is None:
        return None
    return {"name": desktop.name, "integrations": list(desktop.integrations),
            "categories": list(desktop.categories)}


class IconRegion:
    """FlatImage's icon struct: the extension (4 bytes, NUL-padded), the file's bytes,
    and their length as a little-endian u64 in the region's last 8 bytes."""

    text = False
    ICON_KINDS = ("png", "svg")

    def __init__(self, region: Region) -> None:
        self.region = region
        self.capacity = region.size - 12  # what an icon file may hold

    def default(self) -> Optional[Icon]:
        return None

    def decode(self, raw: bytes) -> Optional[Icon]:
        kind = raw[:4].rstrip(b"\0")
        size = int.from_bytes(raw[-8:], "little")
        if not kind and not size:
            return None
        if kind.decode("ascii", "replace") not in self.ICON_KINDS or not 0 < size <= \
                self.capacity:
            raise corrupt(self.region)
        return Icon(kind.decode("ascii"), bytes(raw[4:4 + size]))

    def encode(self, icon: Optional[Icon]) -> bytes:
        if icon is None:
            return b""
        if len(icon.data) > self.capacity:
            # The region's own check would count the padding: say what the file may be.
            raise FimError(f"The icon is too large: {len(icon.data)} bytes, the icon region "
                           f"holds {self.capacity}")
        body = icon.kind.encode("ascii").ljust(4, b"\0") + icon.data
        return body.ljust(self.region.size - 8, b"\0") + len(icon.data).to_bytes(8, "little")


NOTIFY = Byte(REGIONS["notify"])  # 1: a desktop notification at every start
DESKTOP = Json(REGIONS["desktop"], _load_desktop, _dump_desktop, lambda: None)
ICON = IconRegion(REGIONS["icon"])

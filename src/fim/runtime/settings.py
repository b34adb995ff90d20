"""Codecs for the settings stored in the reserved space: permissions, namespaces,
environment, bindings and boot command.

Bit fields are little-endian integers; the others are UTF-8 JSON ending at the
first NUL of their region. Reading a region that holds garbage raises FimError
(the command that shows it prints one `E::` line); runs use `or_default`, so a
damaged setting never keeps the image from starting.
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.image.header import Header
from fim.runtime.image.reserved import REGIONS, read_region, read_text, write_region
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

    T = TypeVar("T")

# Permission bits of the u64 at offset 0.
PERMISSIONS = (
    "home", "media", "audio", "wayland", "xorg", "dbus_user", "dbus_system", "udev",
    "usb", "input", "gpu", "network", "shm", "optical", "dev",
)
# Namespace bits of the u16 `unshare` region.
NAMESPACES = ("user", "ipc", "pid", "net", "uts", "cgroup")
BIND_TYPES = ("ro", "rw", "dev")


@dataclass(frozen=True)
class Binding:
    kind: str  # ro, rw or dev
    src: str  # may hold $VARIABLES, expanded at run time
    dst: str


@dataclass(frozen=True)
class Boot:
    program: str
    args: List[str]


def _open(image: str) -> int:
    try:
        return os.open(image, os.O_RDONLY)
    except OSError as e:
        raise FimError(f"Cannot read image '{image}': {e.strerror}") from None


def names_to_bits(names: Sequence[str], known: Sequence[str], what: str) -> int:
    bits = 0
    for name in names:
        if name not in known:
            raise FimError(f"Invalid {what} '{name}' (valid: all,{','.join(known)})")
        bits |= 1 << known.index(name)
    return bits


def bits_to_names(bits: int, known: Sequence[str]) -> List[str]:
    return [name for i, name in enumerate(known) if bits & (1 << i)]


def parse_list(text: str, known: Sequence[str], what: str) -> int:
    """`a,b,c` or `all` (alone) into bits."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise FimError(f"No {what} given")
    if "all" in names:
        if len(names) > 1:
            raise FimError(f"'all' cannot be combined with other {what}s")
        return (1 << len(known)) - 1
    return names_to_bits(names, known, what)


def read_bits(image: str, header: Header, region: str) -> int:
    fd = _open(image)
    try:
        raw = read_region(fd, header, REGIONS[region])
    finally:
        os.close(fd)
    return int.from_bytes(raw, "little")


def write_bits(image: str, header: Header, region: str, value: int) -> None:
    size = REGIONS[region].size
    write_region(image, header, REGIONS[region], value.to_bytes(size, "little"))


def _json(image: str, header: Header, region: str) -> Any:
    fd = _open(image)
    try:
        text = read_text(fd, header, REGIONS[region])
    finally:
        os.close(fd)
    if not text:
        return None
    import json

    try:
        return json.loads(text)
    except ValueError:
        raise _corrupt(region) from None


def _write_json(image: str, header: Header, region: str, value: Any) -> None:
    import json

    data = b"" if value is None else json.dumps(value).encode()
    write_region(image, header, REGIONS[region], data)


def _corrupt(region: str) -> FimError:
    return FimError(f"The '{region}' setting of the image is corrupted")


def read_environment(image: str, header: Header) -> List[str]:
    value = _json(image, header, "environment")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise _corrupt("environment")
    return value


def write_environment(image: str, header: Header, entries: List[str]) -> None:
    _write_json(image, header, "environment", entries or None)


def read_bindings(image: str, header: Header) -> List[Binding]:
    value = _json(image, header, "bindings")
    if value is None:
        return []
    try:
        bindings = [Binding(v["type"], v["src"], v["dst"]) for v in value]
    except (TypeError, KeyError):
        raise _corrupt("bindings") from None
    if not all(b.kind in BIND_TYPES and isinstance(b.src, str) and isinstance(b.dst, str)
               for b in bindings):
        raise _corrupt("bindings")
    return bindings


def write_bindings(image: str, header: Header, bindings: List[Binding]) -> None:
    value = [{"type": b.kind, "src": b.src, "dst": b.dst} for b in bindings]
    _write_json(image, header, "bindings", value or None)


def read_boot(image: str, header: Header) -> Optional[Boot]:
    value = _json(image, header, "boot")
    if value is None:
        return None
    try:
        boot = Boot(value["program"], list(value["args"]))
    except (TypeError, KeyError):
        raise _corrupt("boot") from None
    if not isinstance(boot.program, str) or not all(isinstance(a, str) for a in boot.args):
        raise _corrupt("boot")
    return boot


def write_boot(image: str, header: Header, boot: Optional[Boot]) -> None:
    value = None if boot is None else {"program": boot.program, "args": boot.args}
    _write_json(image, header, "boot", value)


def or_default(read: Callable[[], T], default: T, problems: List[str]) -> T:
    """The setting, or `default` when its region is damaged (noted in `problems`)."""
    try:
        return read()
    except FimError as e:
        problems.append(e.message)
        return default


def expand(text: str, environ: Dict[str, str]) -> str:
    """$VAR and ${VAR} from the host environment; unknown variables stay as written."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text):
            if text[i + 1] == "{":
                end = text.find("}", i + 2)
                if end > 0:
                    name = text[i + 2:end]
                    out.append(environ.get(name, text[i:end + 1]))
                    i = end + 1
                    continue
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if j > i + 1:
                name = text[i + 1:j]
                out.append(environ.get(name, text[i:j]))
                i = j
                continue
        out.append(c)
        i += 1
    return "".join(out)

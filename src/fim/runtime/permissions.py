"""What each permission opens, on this host: bubblewrap arguments and environment.

Everything a permission needs is looked up here (sockets, device nodes, the
user's runtime directory); resources the host does not have are skipped with
bubblewrap's `-try` binds, so a permission never fails a run. With no
permission the container has no network, no host home, no sockets and no
devices beyond bubblewrap's minimal /dev.
"""

from __future__ import annotations

import os

from fim.runtime.image.settings import PERMISSIONS
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional


@dataclass(frozen=True)
class Grant:
    args: List[str]
    env: Dict[str, str]
    share_network: bool
    home: Optional[str]  # the host home, when `home` makes it the container's


def _has(bits: int, name: str) -> bool:
    return PERMISSIONS.has(bits, name)


def _dev_nodes(prefixes: List[str]) -> List[str]:
    try:
        names = os.listdir("/dev")
    except OSError:
        return []
    return sorted(f"/dev/{n}" for n in names if any(n.startswith(p) for p in prefixes))


def _socket_of(address: str) -> Optional[str]:
    """The path in a D-Bus address `unix:path=/run/user/1000/bus,guid=...`."""
    for part in address.split(";")[0].split(","):
        key, _, value = part.partition("=")
        if key.endswith("path") and value.startswith("/"):
            return value
    return None


def grant(bits: int, environ: Mapping[str, str], uid: int) -> Grant:
    args: List[str] = []
    env: Dict[str, str] = {}

    def bind(kind: str, path: str, dest: Optional[str] = None) -> None:
        args.extend([f"--{kind}-try", path, dest or path])

    runtime_dir = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    uses_runtime_dir = any(_has(bits, p) for p in ("audio", "wayland", "dbus_user"))
    if uses_runtime_dir and os.path.isdir(runtime_dir):
        args += ["--perms", "0700", "--dir", runtime_dir]
        env["XDG_RUNTIME_DIR"] = runtime_dir

    home = None
    if _has(bits, "home"):
        home = environ.get("HOME")
        if home and os.path.isdir(home):
            bind("bind", home)
            env["HOME"] = home
        else:
            home = None
    if _has(bits, "media"):
        for path in ("/media", "/run/media", "/mnt"):
            bind("bind", path)
    if _has(bits, "audio"):
        for name in ("pulse", "pipewire-0"):
            bind("bind", os.path.join(runtime_dir, name))
        bind("dev-bind", "/dev/snd")
        native = os.path.join(runtime_dir, "pulse", "native")
        if os.path.exists(native):
            env["PULSE_SERVER"] = f"unix:{native}"
    if _has(bits, "wayland"):
        display = environ.get("WAYLAND_DISPLAY", "wayland-0")
        wayland = display if display.startswith("/") else os.path.join(runtime_dir, display)
        bind("bind", wayland)
        env["WAYLAND_DISPLAY"] = display
    if _has(bits, "xorg"):
        bind("ro-bind", "/tmp/.X11-unix")
        xauthority = environ.get("XAUTHORITY")
        if xauthority:
            bind("ro-bind", xauthority)
    if _has(bits, "dbus_user"):
        address = environ.get("DBUS_SESSION_BUS_ADDRESS", f"unix:path={runtime_dir}/bus")
        bus = _socket_of(address)
        if bus:
            bind("bind", bus)
            env["DBUS_SESSION_BUS_ADDRESS"] = address
    if _has(bits, "dbus_system"):
        bind("bind", "/run/dbus/system_bus_socket")
    if _has(bits, "udev"):
        bind("ro-bind", "/run/udev")
    if _has(bits, "usb"):
        bind("dev-bind", "/dev/bus/usb")
        bind("dev-bind", "/dev/usb")
    if _has(bits, "input"):
        bind("dev-bind", "/dev/input")
        bind("dev-bind", "/dev/uinput")
    if _has(bits, "gpu"):
        bind("dev-bind", "/dev/dri")
        for node in _dev_nodes(["nvidia"]):
            bind("dev-bind", node)
    if _has(bits, "shm"):
        bind("dev-bind", "/dev/shm")
    if _has(bits, "optical"):
        for node in _dev_nodes(["sr", "sg"]):
            bind("dev-bind", node)
    if _has(bits, "dev"):
        args += ["--dev-bind", "/dev", "/dev"]
    network = _has(bits, "network")
    if network:
        # Host name resolution: the host's resolver configuration, wherever it points.
        resolv = os.path.realpath("/etc/resolv.conf")
        if os.path.isfile(resolv):
            args += ["--ro-bind", resolv, "/etc/resolv.conf"]
    return Grant(args, env, network, home)

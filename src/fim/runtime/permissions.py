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
    from typing import Dict, List, Mapping, Optional, Tuple

    from fim.runtime.portal import Ends


@dataclass(frozen=True)
class Grant:
    # bubblewrap options, each with its operands: ("--ro-bind-try", src, dst), ...
    options: List[Tuple[str, ...]]
    env: Dict[str, str]
    share_network: bool
    home: Optional[str]  # the host home, when `home` makes it the container's
    # Search paths extended, not replaced: variable -> (directories to add after
    # the container's value, what the loader searches when it has none).
    appended: Dict[str, Tuple[str, str]]

    @property
    def args(self) -> List[str]:
        return [word for option in self.options for word in option]

    def report(self) -> List[str]:
        """What FIM_DEBUG prints: each option, and whether a -try source is missing."""
        lines = []
        for flag, *operands in self.options:
            line = " ".join([flag.lstrip("-")] + operands)
            if flag.endswith("-try") and not os.path.exists(operands[0]):
                line += " (not on this host: skipped)"
            lines.append(line)
        return lines


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


# Where the X cookie is in the container (its /tmp is a fresh tmpfs).
XAUTHORITY = "/tmp/.fim-Xauthority"


def xauthority(environ: Mapping[str, str]) -> Optional[str]:
    """The host's X cookie file: $XAUTHORITY, else ~/.Xauthority (startx, ssh -X)."""
    path = environ.get("XAUTHORITY")
    if not path and environ.get("HOME"):
        path = os.path.join(environ["HOME"], ".Xauthority")
    return path if path and os.path.isfile(path) else None


def _x_socket(display: str) -> Optional[str]:
    """The socket file of a local X display `:0`, `:0.0`, `unix:0`; None for others."""
    host, sep, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not sep or host not in ("", "unix") or not number.isdigit():
        return None
    return f"/tmp/.X11-unix/X{number}"


def needs_abstract_sockets(bits: int, environ: Mapping[str, str]) -> List[str]:
    """The granted permissions that scoping (landlock.py) would break: a D-Bus
    `unix:abstract=` address, and a local X display, whose clients (libxcb) try
    the abstract socket first and fall back to the socket file only when it is
    missing, not when it is refused."""
    needs = []
    if _has(bits, "dbus_user") and "abstract=" in environ.get("DBUS_SESSION_BUS_ADDRESS", ""):
        needs.append("dbus_user")
    if _has(bits, "xorg") and _x_socket(environ.get("DISPLAY", "")):
        needs.append("xorg")
    return needs


def grant(bits: int, environ: Mapping[str, str], uid: int, host: str = "/",
          portal: Optional[Ends] = None) -> Grant:
    """What `bits` open on this host (`host`: where its driver files are looked up);
    with `portal`, the portal's client, and its directory when `portal` is granted."""
    args: List[Tuple[str, ...]] = []
    env: Dict[str, str] = {}
    appended: Dict[str, Tuple[str, str]] = {}

    def bind(kind: str, path: str, dest: Optional[str] = None) -> None:
        args.append((f"--{kind}-try", path, dest or path))

    runtime_dir = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    uses_runtime_dir = any(_has(bits, p) for p in ("audio", "wayland", "dbus_user"))
    if uses_runtime_dir and os.path.isdir(runtime_dir):
        args.append(("--perms", "0700"))
        args.append(("--dir", runtime_dir))
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
        # The sockets alone, not the directories around them.
        for name in ("pulse/native", "pipewire-0"):
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
        cookie = xauthority(environ)
        if cookie:
            # At a fixed place in the container's /tmp: the host home need not be there.
            bind("ro-bind", cookie, XAUTHORITY)
            env["XAUTHORITY"] = XAUTHORITY
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
        from fim.runtime import gpu

        bind("dev-bind", "/dev/dri")
        for node in _dev_nodes(["nvidia"]):
            bind("dev-bind", node)
        driver, paths = gpu.nvidia(host)
        args += driver
        for key, value in paths.items():
            appended[key] = (value, gpu.DEFAULTS.get(key, ""))
    if _has(bits, "shm"):
        bind("dev-bind", "/dev/shm")
    if _has(bits, "optical"):
        for node in _dev_nodes(["sr", "sg"]):
            bind("dev-bind", node)
    if _has(bits, "dev"):
        args.append(("--dev-bind", "/dev", "/dev"))
    network = _has(bits, "network")
    if network:
        # Host name resolution: the host's resolver configuration, wherever it points.
        resolv = os.path.realpath("/etc/resolv.conf")
        if os.path.isfile(resolv):
            args.append(("--ro-bind", resolv, "/etc/resolv.conf"))
    if portal is not None:
        _portal(bits, portal, args, appended)
    return Grant(args, env, network, home, appended)


def _portal(bits: int, ends: Ends, args: List[Tuple[str, ...]],
            appended: Dict[str, Tuple[str, str]]) -> None:
    """The client always (without the permission it says the portal is closed), on
    PATH after everything else; the instance's portal directory with it."""
    from fim.runtime import portal

    args.append(("--ro-bind-try", ends.client, portal.CLIENT))
    if _has(bits, "portal"):
        args.append(("--bind", ends.directory, portal.HOST_DIR))
    before = appended.get("PATH", ("", ""))[0]
    appended["PATH"] = (f"{before}:{portal.CONTAINER_DIR}" if before else portal.CONTAINER_DIR,
                        "")

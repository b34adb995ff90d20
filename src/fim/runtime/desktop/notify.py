"""`fim-notify on`: a desktop notification as the program starts, with the app's name
and icon, sent from the background of the start (never in its way).

The host's `notify-send` (libnotify) first, FlatImage's way; else the freedesktop
notification interface over the session bus with `gdbus` (GLib). `dbus-send`
cannot be used: it has no way to pass the a{sv} hints argument Notify takes. A
host with neither, or without a session bus, gets no notification and no message.
"""

from __future__ import annotations

import os

from fim.runtime import tools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Mapping, Optional

# Seconds a notification tool may take (a bus that activates a missing daemon waits).
TIMEOUT = 30.0
FALLBACK_ICON = "application-x-executable"


def summary(name: str) -> str:
    return f"Started '{name}' FlatImage"


def commands(name: str, icon: str, environ: Mapping[str, str]) -> List[List[str]]:
    """The command lines that can send the notification on this host, best first."""
    found = []
    send = tools.on_host("notify-send", environ)
    if send is not None:
        found.append([send, "-i", icon, summary(name)])
    gdbus = tools.on_host("gdbus", environ)
    bus = environ.get("DBUS_SESSION_BUS_ADDRESS", "") or os.path.exists(_user_bus(environ))
    if gdbus is not None and bus:
        # Typed GVariant text: gdbus guesses types from the service's introspection,
        # and reads `0` as int32 and `[]` as a string where it gets none.
        found.append([gdbus, "call", "--session", "--dest", "org.freedesktop.Notifications",
                      "--object-path", "/org/freedesktop/Notifications", "--method",
                      "org.freedesktop.Notifications.Notify", _text("fim"), "uint32 0",
                      _text(icon), _text(summary(name)), _text(""), "@as []", "@a{sv} {}",
                      "int32 5000"])
    return found


def _text(value: str) -> str:
    """A GVariant string literal (a bare word such as `true` or `42` would be read as
    another type)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _user_bus(environ: Mapping[str, str]) -> str:
    """Where a session bus listens when no address is given (systemd's user bus)."""
    runtime = environ.get("XDG_RUNTIME_DIR", "") or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, "bus")


def send(name: str, icon: Optional[str], environ: Mapping[str, str],
         say: Callable[[str], None], verbose: bool) -> None:
    """Notify with the first tool that succeeds; nothing when none does."""
    shown = icon if icon and os.path.exists(icon) else FALLBACK_ICON
    from fim.runtime.desktop import run_tool

    ways = commands(name, shown, environ)
    for argv in ways:
        code = run_tool(argv, environ, verbose, TIMEOUT)
        say(f"notification through {os.path.basename(argv[0])}: exit {code}")
        if code == 0:
            return
    say("no notification sent (" + ("none of its ways worked" if ways else
                                    "no notify-send, no gdbus with a session bus") + ")")

"""permissions.grant: what each permission opens, against a made-up host environment."""

from __future__ import annotations

import os
from pathlib import Path

from fim.runtime import permissions
from fim.runtime.image.settings import PERMISSIONS


def _bits(*names: str) -> int:
    return PERMISSIONS.parse(",".join(names))


def _binds(args: list) -> list:
    return [(args[i], args[i + 1], args[i + 2]) for i, a in enumerate(args)
            if a.startswith("--") and a.endswith("-try")]


def test_no_permission_opens_nothing(tmp_path: Path) -> None:
    g = permissions.grant(0, {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}, 1000)
    assert g.args == [] and g.env == {} and not g.share_network and g.home is None


def test_home(tmp_path: Path) -> None:
    g = permissions.grant(_bits("home"), {"HOME": str(tmp_path)}, 1000)
    assert ("--bind-try", str(tmp_path), str(tmp_path)) in _binds(g.args)
    assert g.home == str(tmp_path) and g.env["HOME"] == str(tmp_path)
    missing = permissions.grant(_bits("home"), {"HOME": str(tmp_path / "nope")}, 1000)
    assert missing.home is None and missing.args == []


def test_network_shares_and_binds_the_resolver() -> None:
    g = permissions.grant(_bits("network"), {}, 1000)
    assert g.share_network
    resolv = os.path.realpath("/etc/resolv.conf")
    expected = ["--ro-bind", resolv, "/etc/resolv.conf"] if os.path.isfile(resolv) else []
    assert g.args == expected


def test_sockets_live_in_the_runtime_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "pulse").mkdir(parents=True)
    (run / "pulse" / "native").touch()
    env = {"XDG_RUNTIME_DIR": str(run), "WAYLAND_DISPLAY": "wayland-1",
           "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run}/bus,guid=1"}
    g = permissions.grant(_bits("audio", "wayland", "dbus_user"), env, 1000)
    binds = _binds(g.args)
    assert ("--bind-try", f"{run}/pulse/native", f"{run}/pulse/native") in binds
    assert ("--bind-try", f"{run}/wayland-1", f"{run}/wayland-1") in binds
    assert ("--bind-try", f"{run}/bus", f"{run}/bus") in binds
    assert g.env["XDG_RUNTIME_DIR"] == str(run)
    assert g.env["PULSE_SERVER"] == f"unix:{run}/pulse/native"
    assert g.env["WAYLAND_DISPLAY"] == "wayland-1"
    assert g.args[:4] == ["--perms", "0700", "--dir", str(run)]


def test_xorg_binds_the_socket_dir_and_cookie(tmp_path: Path) -> None:
    cookie = tmp_path / "cookie"
    cookie.write_bytes(b"x")
    g = permissions.grant(_bits("xorg"), {"XAUTHORITY": str(cookie)}, 1000)
    binds = _binds(g.args)
    assert ("--ro-bind-try", "/tmp/.X11-unix", "/tmp/.X11-unix") in binds
    assert ("--ro-bind-try", str(cookie), permissions.XAUTHORITY) in binds
    assert g.env["XAUTHORITY"] == permissions.XAUTHORITY


def test_xorg_finds_the_cookie_in_the_home_without_opening_it(tmp_path: Path) -> None:
    (tmp_path / ".Xauthority").write_bytes(b"x")
    g = permissions.grant(_bits("xorg"), {"HOME": str(tmp_path)}, 1000)
    binds = _binds(g.args)
    assert ("--ro-bind-try", str(tmp_path / ".Xauthority"), permissions.XAUTHORITY) in binds
    assert g.home is None and not any(b[1] == str(tmp_path) for b in binds)
    # No cookie anywhere: the socket alone, no XAUTHORITY pointing at nothing.
    none = permissions.grant(_bits("xorg"), {"HOME": str(tmp_path / "nope")}, 1000)
    assert "XAUTHORITY" not in none.env and len(_binds(none.args)) == 1


def test_abstract_only_servers_are_named(tmp_path: Path) -> None:
    bus = {"DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus-x,guid=1"}
    assert permissions.needs_abstract_sockets(_bits("dbus_user"), bus) == ["dbus_user"]
    assert permissions.needs_abstract_sockets(_bits("network"), bus) == []
    # libxcb gives up on a refused abstract socket: a local display keeps them open.
    assert permissions.needs_abstract_sockets(_bits("xorg"), {"DISPLAY": ":7.0"}) == ["xorg"]
    assert permissions.needs_abstract_sockets(_bits("xorg"), {"DISPLAY": "unix:7"}) == ["xorg"]
    assert permissions.needs_abstract_sockets(_bits("xorg"), {"DISPLAY": "host:0"}) == []


def test_debug_report_names_missing_sources(tmp_path: Path) -> None:
    g = permissions.grant(_bits("usb", "dev"), {}, 1000)
    lines = g.report()
    assert "dev-bind /dev /dev" in lines
    assert all(line.startswith("dev-bind") for line in lines)
    missing = permissions.grant(_bits("wayland"), {"XDG_RUNTIME_DIR": str(tmp_path)}, 1000)
    assert any(line.endswith("(not on this host: skipped)") for line in missing.report())


def test_devices() -> None:
    g = permissions.grant(_bits("gpu", "input", "dev"), {}, 1000)
    binds = _binds(g.args)
    assert ("--dev-bind-try", "/dev/dri", "/dev/dri") in binds
    assert ("--dev-bind-try", "/dev/input", "/dev/input") in binds
    assert g.args[-3:] == ["--dev-bind", "/dev", "/dev"]

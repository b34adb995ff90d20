"""fim-desktop and fim-notify end to end, as root and as an ordinary user, with the
host's real desktop tools on a temporary XDG_DATA_HOME: the entry passes
desktop-file-validate, xdg-mime names the image's type and its entry, the icons are
PNGs of the hicolor sizes (pngcheck), the entry follows the image when it moves,
clean leaves nothing, bad input changes nothing, and a notification goes through a
fake notify-send first on PATH without delaying the program."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import Runner, fim

from fim.runtime.desktop import layout, png

TOOLS = ("desktop-file-validate", "update-desktop-database", "update-mime-database",
         "xdg-mime", "pngcheck")
NAME = "MyApp"
MIME = f"application/flatimage_{NAME}"


def _missing() -> List[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"desktop tools missing: {_missing()}")


def _icon(width: int = 300, height: int = 200) -> bytes:
    """A non-square RGBA picture with a transparent border: scaled, then centred."""
    rgba = bytearray()
    for y in range(height):
        for x in range(width):
            inside = 20 <= x < width - 20 and 20 <= y < height - 20
            rgba += bytes([x * 255 // width, y * 255 // height, 90, 255 if inside else 0])
    return png.encode(png.Picture(width, height, bytes(rgba)))


class Desk:
    """One runner's desktop: its XDG_DATA_HOME, the JSON and icon, a bin dir first on
    PATH, all in the test's directory (the ordinary user reads nothing under /root)."""

    def __init__(self, workdir: Path, runner: Runner, image: Path) -> None:
        self.runner, self.image, self.dir = runner, image, workdir
        self.xdg = workdir / "xdg"
        self.bin = workdir / "bin"
        for d in (self.xdg, self.bin):
            d.mkdir()
        (workdir / "art").mkdir()
        (workdir / "art" / "icon.png").write_bytes(_icon())
        self.json = self.write_json({"name": NAME, "icon": "art/icon.png",
                                     "categories": ["X-Test", "Game", "X-Test"],
                                     "integrations": ["ENTRY", "MIMETYPE", "ICON"]})
        if runner.user is not None:
            subprocess.run(["chown", "-R", str(runner.uid), str(workdir)], check=True)

    def write_json(self, value: object, name: str = "desktop.json") -> Path:
        path = self.dir / name
        path.write_text(value if isinstance(value, str) else json.dumps(value))
        if self.runner.user is not None:
            os.chown(path, self.runner.uid, -1)
        return path

    def env(self, **extra: str) -> Dict[str, str]:
        env = {"XDG_DATA_HOME": str(self.xdg), "PATH": f"{self.bin}:{os.environ['PATH']}"}
        for name in ("XDG_CURRENT_DESKTOP", "DESKTOP_SESSION", "KDE_FULL_SESSION",
                     "GNOME_DESKTOP_SESSION_ID", "DBUS_SESSION_BUS_ADDRESS"):
            env[name] = ""  # xdg-mime's generic mode, and no session bus
        env.update(extra)
        return env

    def run(self, *args: str, image: Optional[Path] = None, **extra: str
            ) -> subprocess.CompletedProcess:
        return self.runner.run([str(image or self.image), *args], env=self.env(**extra))

    def start(self, image: Optional[Path] = None) -> subprocess.CompletedProcess:
        """A run that waits for the background integration: with FIM_DEBUG its output
        is ours until it ends."""
        r = self.run("fim-exec", "true", image=image, FIM_DEBUG="1")
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def tree(self) -> List[str]:
        return sorted(str(p.relative_to(self.xdg)) for p in self.xdg.rglob("*"))

    def xdg_mime(self, *args: str) -> str:
        env = dict(os.environ, **self.env())
        r = subprocess.run(self.runner.argv(["xdg-mime", "query", *args]), env=env,
                           capture_output=True, text=True)
        return r.stdout.strip()


def settle(image: Path, timeout: float = 60) -> None:
    """Until the image's background process has ended."""
    title = f"{image} fim-desktop background".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    busy = busy or f.read().startswith(title)
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"the background integration of {image} did not end")


def _png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data.startswith(png.SIGNATURE) and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def desk(workdir: Path, runner: Runner, image: Path) -> Desk:
    return Desk(workdir, runner, image)


def test_a_run_installs_what_setup_enabled(desk: Desk) -> None:
    r = desk.run("fim-desktop", "setup", str(desk.json))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # FlatImage's form: two-space JSON, sorted keys, the categories a sorted set.
    assert r.stdout == json.dumps({"categories": ["Game", "X-Test"], "integrations": [
        "ENTRY", "MIMETYPE", "ICON"], "name": NAME}, indent=2) + "\n"
    assert desk.tree() == []  # setup installs nothing; runs do
    r = desk.run("fim-exec", "echo", "hi")
    # Silent: the program's output, nothing of the integration.
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")
    settle(desk.image)
    entry = desk.xdg / "applications" / f"flatimage-{NAME}.desktop"
    v = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert v.returncode == 0 and "error" not in v.stdout, v.stdout
    text = entry.read_text()
    assert f'Exec="{desk.image}" %F\n' in text and f"Icon=flatimage_{NAME}\n" in text
    assert f"MimeType={MIME};\n" in text
    assert desk.xdg_mime("filetype", str(desk.image)) == MIME
    assert desk.xdg_mime("default", MIME) == entry.name
    for size in layout.SIZES:
        for kind, name in (("apps", f"flatimage_{NAME}.png"),
                           ("mimetypes", f"application-flatimage_{NAME}.png")):
            icon = desk.xdg / f"icons/hicolor/{size}x{size}/{kind}/{name}"
            check = subprocess.run(["pngcheck", str(icon)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout
            assert _png_size(icon) == (size, size)
    # The 300x200 picture, scaled to 256 wide and centred: transparent rows above.
    big = png.decode((desk.xdg / f"icons/hicolor/256x256/apps/flatimage_{NAME}.png")
                     .read_bytes())
    assert set(big.rgba[3:256 * 4 * 40:4]) == {0} and big.rgba[(128 * 256 + 128) * 4 + 3] == 255


def test_the_entry_follows_the_image_and_clean_leaves_nothing(desk: Desk) -> None:
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    desk.start()
    entry = desk.xdg / "applications" / f"flatimage-{NAME}.desktop"
    assert f'Exec="{desk.image}"' in entry.read_text()
    moved_dir = desk.dir / "Other Place"
    moved_dir.mkdir()
    if desk.runner.user is not None:
        os.chown(moved_dir, desk.runner.uid, -1)
    moved = moved_dir / "renamed app.flatimage"
    os.rename(desk.image, moved)
    desk.start(moved)
    assert f'Exec="{moved}" %F' in entry.read_text()
    assert f"TryExec={moved}\n" in entry.read_text()
    assert desk.xdg_mime("filetype", str(moved)) == MIME
    v = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert v.returncode == 0 and "error" not in v.stdout, v.stdout
    # Renamed in its own directory, then with a new name in the settings too.
    again = moved_dir / "third.flatimage"
    os.rename(moved, again)
    renamed = desk.write_json({"name": "Renamed", "icon": "art/icon.png", "categories": [],
                               "integrations": ["ENTRY", "MIMETYPE", "ICON"]}, "renamed.json")
    assert desk.run("fim-desktop", "setup", str(renamed), image=again).returncode == 0
    desk.start(again)
    assert not entry.exists()
    assert (desk.xdg / "applications/flatimage-Renamed.desktop").exists()
    assert not list(desk.xdg.rglob(f"*{NAME}*")), "the old name's files stay"
    assert desk.xdg_mime("filetype", str(again)) == "application/flatimage_Renamed"
    r = desk.run("fim-desktop", "clean", image=again)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert desk.tree() == []


def test_nothing_is_installed_until_enabled(desk: Desk) -> None:
    plain = desk.write_json({"name": NAME, "icon": "art/icon.png", "categories": ["Game"]})
    assert desk.run("fim-desktop", "setup", str(plain)).returncode == 0
    desk.start()
    assert desk.tree() == []
    r = desk.run("fim-desktop", "enable", "entry")
    assert (r.returncode, r.stdout) == (0, "ENTRY\n")
    desk.start()
    assert f"applications/flatimage-{NAME}.desktop" in desk.tree()
    assert not any(p.startswith(("icons", "mime")) for p in desk.tree())
    # Turned off: the next run takes back what it had installed.
    assert desk.run("fim-desktop", "enable", "none").returncode == 0
    desk.start()
    assert desk.tree() == []


def test_clean_keeps_what_is_not_fims(desk: Desk) -> None:
    own = desk.xdg / "applications" / "someone-else.desktop"
    own.parent.mkdir()
    own.write_text("[Desktop Entry]\nType=Application\nName=X\nExec=x\n")
    package = desk.xdg / "mime" / "packages" / "their-type.xml"
    package.parent.mkdir(parents=True)
    package.write_text('<?xml version="1.0"?>\n<mime-info xmlns="http://www.freedesktop.org/'
                       'standards/shared-mime-info"><mime-type type="text/x-theirs">'
                       '<glob pattern="*.theirs"/></mime-type></mime-info>\n')
    if desk.runner.user is not None:
        subprocess.run(["chown", "-R", str(desk.runner.uid), str(desk.xdg)], check=True)
    before = {p: p.read_bytes() for p in (own, package)}
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    desk.start()
    assert desk.run("fim-desktop", "clean").returncode == 0
    assert {p: p.read_bytes() for p in (own, package)} == before
    # Their MIME type still works: the database stays, without fim's types.
    assert (desk.xdg / "mime/mime.cache").exists()
    assert MIME not in (desk.xdg / "mime/types").read_text()
    assert not [p for p in desk.tree() if "lock" in p or p.startswith("fim")]


BAD = [
    ({"icon": "art/icon.png", "categories": []}, "missing field 'name'"),
    ({"name": "A", "icon": "art/icon.png", "categories": "Game"}, "list of strings"),
    ({"name": "A", "icon": "art/icon.png", "categories": ["Nope"]}, "unknown category"),
    ({"name": "A", "icon": "art/icon.png", "categories": [], "integrations": ["MENU"]},
     "unknown integration 'MENU'"),
    ({"name": "A", "icon": "art/text.png", "categories": []}, "not a valid PNG image"),
    ({"name": "A", "icon": "art/big.png", "categories": []}, "too large"),
    ({"name": "A", "icon": "art/none.svg", "categories": []}, "Cannot read icon"),
    ("not json", "not valid JSON"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_bad_input_is_one_line_and_changes_nothing(desk: Desk, value: object,
                                                   message: str) -> None:
    (desk.dir / "art" / "text.png").write_text("not a picture\n")
    (desk.dir / "art" / "big.png").write_bytes(_icon()[:33] + b"\0" * (1 << 20))
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    entry = desk.run("fim-desktop", "dump", "entry").stdout
    desk.run("fim-desktop", "dump", "icon", str(desk.dir / "before"))
    r = desk.run("fim-desktop", "setup", str(desk.write_json(value, "bad.json")))
    assert r.returncode == 125 and r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("E::") and message in lines[0], r.stderr
    assert desk.run("fim-desktop", "dump", "entry").stdout == entry
    desk.run("fim-desktop", "dump", "icon", str(desk.dir / "after.png"))
    assert (desk.dir / "after.png").read_bytes() == (desk.dir / "before.png").read_bytes()


@pytest.mark.parametrize(("args", "message"), [
    ([], "Missing op for 'fim-desktop' (enable,setup,clean,dump)"),
    (["setup"], "Missing argument for 'setup' (/path/to/file.json)"),
    (["SETUP", "a.json", "b"], "Trailing arguments for fim-desktop: ['b',]"),
    (["enable"], "Missing arguments for 'enable' (entry,mimetype,icon,none)"),
    (["enable", "entry,menu"], "Invalid integration item"),
    (["enable", "menu", "x"], "Invalid integration item"),  # values before the count
    (["enable", "none,entry"], "'none' option should not be used with others"),
    (["dump"], "Missing arguments for 'dump' (entry,mimetype,icon)"),
    (["dump", "desktop"], "Invalid dump operation"),
    (["dump", "icon"], "Missing argument for 'icon' /path/to/dump/file"),
    (["dump", "entry", "x"], "Trailing arguments for fim-desktop: ['x',]"),
    (["clean", "x"], "Trailing arguments for fim-desktop: ['x',]"),
    (["frob"], "Invalid desktop operation"),
])
def test_bad_commands(desk: Desk, args: List[str], message: str) -> None:
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    r = desk.run("fim-desktop", *args)
    assert (r.returncode, r.stdout, r.stderr) == (125, "", f"E::{message}\n")
    stored = json.loads(fim("inspect", "--json", str(desk.image)).stdout)["reserved"]["desktop"]
    assert stored["integrations"] == ["ENTRY", "MIMETYPE", "ICON"]


def test_dump(desk: Desk) -> None:
    r = desk.run("fim-desktop", "dump", "entry")
    assert r.returncode == 125 and "not set up" in r.stderr
    assert desk.run("fim-desktop", "dump", "icon", str(desk.dir / "x")).stderr == \
        "E::Empty icon data\n"
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    assert desk.run("fim-desktop", "dump", "icon", str(desk.dir / "out")).returncode == 0
    assert (desk.dir / "out.png").read_bytes() == (desk.dir / "art" / "icon.png").read_bytes()
    assert desk.run("fim-desktop", "dump", "icon", str(desk.dir / "kept.png")).returncode == 0
    assert (desk.dir / "kept.png").exists() and not (desk.dir / "kept.png.png").exists()
    entry = desk.run("fim-desktop", "dump", "entry").stdout
    assert entry.startswith("[Desktop Entry]\n") and f'Exec="{desk.image}" %F' in entry
    mime = desk.run("fim-desktop", "dump", "mimetype").stdout
    assert f'type="{MIME}"' in mime and 'pattern="app.flatimage"' in mime
    assert desk.tree() == []  # dumping installs nothing


def _fake_notify_send(desk: Desk, delay: float = 0) -> Path:
    record = desk.dir / "notified"
    script = desk.bin / "notify-send"
    script.write_text(f"#!/bin/sh\nsleep {delay}\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; "
                      f"done >> '{record}'\n")
    script.chmod(0o755)
    if desk.runner.user is not None:
        os.chown(script, desk.runner.uid, -1)
    return record


def test_notify_goes_through_notify_send_without_delaying_the_start(desk: Desk) -> None:
    r = desk.run("fim-notify", "on")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    record = _fake_notify_send(desk, delay=4)
    assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
    start = time.monotonic()
    r = desk.run("fim-exec", "echo", "started")
    took = time.monotonic() - start
    assert (r.returncode, r.stdout, r.stderr) == (0, "started\n", "")
    assert took < 4, f"the start waited for the notification ({took:.1f} s)"
    assert not record.exists()
    settle(desk.image)
    icon = desk.xdg / f"icons/hicolor/64x64/apps/flatimage_{NAME}.png"
    assert record.read_text() == f"-i\n{icon}\nStarted '{NAME}' FlatImage\n"


def test_notify_without_desktop_names_the_file(desk: Desk) -> None:
    assert desk.run("fim-notify", "on").returncode == 0
    record = _fake_notify_send(desk)
    desk.start()
    assert record.read_text() == f"-i\napplication-x-executable\nStarted '{desk.image.name}' " \
                                 "FlatImage\n"
    assert desk.tree() == []  # a notification installs nothing


def test_notify_with_no_tool_is_silent(desk: Desk) -> None:
    bus = Path(f"/run/user/{desk.runner.uid}/bus")
    if bus.exists():
        pytest.skip("a session bus listens for this user: gdbus would be used")
    assert desk.run("fim-notify", "on").returncode == 0
    r = desk.run("fim-exec", "echo", "still")
    assert (r.returncode, r.stdout, r.stderr) == (0, "still\n", "")
    settle(desk.image)
    r = desk.run("fim-exec", "true", FIM_DEBUG="1")
    assert "D::Desktop: no notification sent" in r.stdout
    assert desk.run("fim-notify", "off").returncode == 0
    r = desk.run("fim-exec", "true", FIM_DEBUG="1")
    assert "notification" not in r.stdout


@pytest.mark.skipif(shutil.which("notify-send") is not None or shutil.which("gdbus") is None
                    or shutil.which("dbus-daemon") is None,
                    reason="needs gdbus and dbus-daemon, and no notify-send on the host")
def test_notify_through_the_session_bus(desk: Desk) -> None:
    """No notify-send: the freedesktop interface through gdbus, typed as Notify takes it
    (seen by dbus-monitor on a session bus of the runner's own, which no notification
    daemon serves)."""
    socket = desk.dir / "bus"
    config = desk.dir / "bus.conf"
    config.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" '
        '"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig><type>session</type><listen>unix:path={socket}</listen>"
        "<auth>EXTERNAL</auth><policy context=\"default\"><allow send_destination=\"*\" "
        "eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy>"
        "</busconfig>\n")
    daemon = desk.runner.popen(["dbus-daemon", f"--config-file={config}", "--nofork"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"unix:path={socket}"
    monitor = None
    try:
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(desk.dir / "monitor.log", "w") as log:
            monitor = desk.runner.popen(["dbus-monitor", "--address", address,
                                         "interface='org.freedesktop.Notifications'"],
                                        stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        assert desk.run("fim-notify", "on").returncode == 0
        assert desk.run("fim-desktop", "setup", str(desk.json)).returncode == 0
        r = desk.run("fim-exec", "true", FIM_DEBUG="1", DBUS_SESSION_BUS_ADDRESS=address)
        assert "D::Desktop: notification through gdbus" in r.stdout, r.stdout
        time.sleep(0.5)
        seen = (desk.dir / "monitor.log").read_text()
        call = seen[seen.index("member=Notify"):]
        icon = desk.xdg / f"icons/hicolor/64x64/apps/flatimage_{NAME}.png"
        assert f'string "fim"\n   uint32 0\n   string "{icon}"\n   string "Started ' \
               f"'{NAME}' FlatImage\"\n" in call, call
        assert "int32 5000" in call
    finally:
        for proc in (monitor, daemon):
            if proc is not None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(("args", "message"), [
    ([], "Incorrect number of arguments for 'fim-notify' (<on|off>)"),
    (["on", "x"], "Incorrect number of arguments for 'fim-notify' (<on|off>)"),
    (["maybe"], "Invalid notify switch"),
    (["maybe", "x"], "Invalid notify switch"),
])
def test_bad_notify(desk: Desk, args: List[str], message: str) -> None:
    r = desk.run("fim-notify", *args)
    assert (r.returncode, r.stderr) == (125, f"E::{message}\n")


def test_build_with_desktop(tmp_path: Path, built_image: Path) -> None:
    workdir = tmp_path
    (workdir / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" '
                                      'height="8"><rect width="8" height="8"/></svg>\n')
    (workdir / "d.json").write_text(json.dumps({"name": "Built", "icon": "icon.svg",
                                                "categories": ["Utility"],
                                                "integrations": ["ENTRY", "ICON"]}))
    out = workdir / "built.flatimage"
    r = fim("build", str(built_image.parent / "rootfs"), str(out), "--desktop",
            str(workdir / "d.json"), "--python", "none")
    assert r.returncode == 0, r.stderr
    info = json.loads(fim("inspect", "--json", str(out)).stdout)["reserved"]["desktop"]
    assert info == {"name": "Built", "categories": ["Utility"], "integrations": ["ENTRY", "ICON"],
                    "icon": {"type": "svg", "size": (workdir / "icon.svg").stat().st_size}}
    (workdir / "bad.json").write_text(json.dumps({"name": "B", "icon": "icon.svg",
                                                  "categories": ["Nope"]}))
    bad = workdir / "bad.flatimage"
    r = fim("build", str(built_image.parent / "rootfs"), str(bad), "--desktop",
            str(workdir / "bad.json"))
    assert r.returncode == 125 and r.stderr.startswith("E::") and "unknown category" in r.stderr
    assert not bad.exists()

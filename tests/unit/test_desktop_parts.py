"""Desktop integration without a run: the desktop and icon codecs, the PNG reader and
scaler against an independent encoder (every colour type, depth, filter, Adam7), the
setup checks, the entry's quoting, and install/clean on a temporary XDG directory
with the host's real cache tools."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from fim.runtime.desktop import install, layout, png, setup
from fim.runtime.errors import FimError
from fim.runtime.image import settings
from fim.runtime.image.file import ImageFile, open_image

from .test_settings import image, make_image  # noqa: F401 - the fixture and its image

# -- an independent PNG writer: any colour type, depth, filter, interlace -------------

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
         (1, 0, 2, 2), (0, 1, 1, 2))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _filtered(rows: List[bytes], bpp: int, kind: int) -> bytes:
    out = bytearray()
    prior = bytes(len(rows[0])) if rows else b""
    for n, row in enumerate(rows):
        ft = kind if kind >= 0 else n % 5  # -1: every filter in turn
        out.append(ft)
        for i, v in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prior[i], prior[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ft]
            out.append((v - pred) & 255)
        prior = row
    return bytes(out)


def _pack_row(values: Sequence[int], depth: int) -> bytes:
    if depth == 8:
        return bytes(values)
    if depth == 16:
        return b"".join(struct.pack(">H", v) for v in values)
    bits = "".join(format(v, f"0{depth}b") for v in values)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png(width: int, height: int, samples: List[List[int]], color: int, depth: int,
              filt: int = -1, interlace: bool = False, extra: bytes = b"") -> bytes:
    """`samples`: per pixel (row-major) its channel values at `depth`."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    bpp = max(1, depth * channels // 8)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    stream = b""
    for x0, y0, dx, dy in passes:
        rows = []
        for y in range(y0, height, dy):
            values = [v for x in range(x0, width, dx) for v in samples[y * width + x]]
            if values:
                rows.append(_pack_row(values, depth))
        if rows:
            stream += _filtered(rows, bpp, filt)
    head = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, int(interlace))
    return (png.SIGNATURE + chunk(b"IHDR", head) + extra + chunk(b"IDAT", zlib.compress(stream))
            + chunk(b"IEND", b""))


def _pattern(width: int, height: int) -> List[Tuple[int, int, int, int]]:
    return [((x * 37) & 255, (y * 53) & 255, ((x ^ y) * 11) & 255, (x * y * 7) & 255)
            for y in range(height) for x in range(width)]


@pytest.mark.parametrize("filt", [0, 1, 2, 3, 4, -1])
@pytest.mark.parametrize("interlace", [False, True])
def test_rgba_and_rgb_every_filter(filt: int, interlace: bool) -> None:
    w, h = 13, 11
    pixels = _pattern(w, h)
    data = write_png(w, h, [list(p) for p in pixels], 6, 8, filt, interlace)
    assert png.decode(data).rgba == b"".join(bytes(p) for p in pixels)
    rgb = write_png(w, h, [list(p[:3]) for p in pixels], 2, 8, filt, interlace)
    assert png.decode(rgb).rgba == b"".join(bytes(p[:3]) + b"\xff" for p in pixels)


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_gray_depths_scale_to_full_range(depth: int) -> None:
    w, h = 9, 5
    top = (1 << depth) - 1
    values = [(x + y) % (top + 1) for y in range(h) for x in range(w)]
    decoded = png.decode(write_png(w, h, [[v] for v in values], 0, depth, interlace=True))
    expect = [v * 255 // top if depth < 16 else v >> 8 for v in values]
    assert list(decoded.rgba[0::4]) == expect and set(decoded.rgba[3::4]) == {255}


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_palette_with_transparency(depth: int) -> None:
    entries = min(1 << depth, 6)
    palette = bytes(v for i in range(entries) for v in (i * 40, 255 - i * 40, i * 7))
    trns = bytes([0, 128])  # entry 0 transparent, 1 half, the rest opaque
    w, h = 7, 3
    index = [(x * 3 + y) % entries for y in range(h) for x in range(w)]
    data = write_png(w, h, [[i] for i in index], 3, depth,
                     extra=chunk(b"PLTE", palette) + chunk(b"tRNS", trns))
    rgba = png.decode(data).rgba
    for n, i in enumerate(index):
        alpha = trns[i] if i < len(trns) else 255
        assert rgba[n * 4:n * 4 + 4] == palette[i * 3:i * 3 + 3] + bytes([alpha])


def test_gray_alpha_16_bit_and_color_keys() -> None:
    ga = write_png(2, 1, [[0x1234, 0xFF00], [0xABCD, 0x0100]], 4, 16)
    assert png.decode(ga).rgba == bytes([0x12] * 3 + [0xFF] + [0xAB] * 3 + [0x01])
    key = chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))
    rgb = write_png(2, 1, [[1, 2, 3], [1, 2, 4]], 2, 8, extra=key)
    assert png.decode(rgb).rgba == bytes([1, 2, 3, 0, 1, 2, 4, 255])
    gray = write_png(2, 1, [[7], [8]], 0, 8, extra=chunk(b"tRNS", struct.pack(">H", 8)))
    assert png.decode(gray).rgba == bytes([7, 7, 7, 255, 8, 8, 8, 0])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: b"GIF89a" + d[6:], "no PNG signature"),
    (lambda d: d[:-20], "truncated"),
    (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], "CRC mismatch"),
    (lambda d: d[:8] + chunk(b"tEXt", b"a\0b") + d[8:], "first chunk is not IHDR"),
    (lambda d: d[:-12], "no IEND"),
])
def test_damaged_pngs_are_named(damage: object, message: str) -> None:
    good = write_png(4, 4, [[1, 2, 3, 4]] * 16, 6, 8)
    with pytest.raises(png.PngError, match=message):
        png.check(damage(good))  # type: ignore[operator]


def test_wrong_sizes_and_methods_are_refused() -> None:
    huge = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 5000, 1, 8, 0, 0, 0, 0))
    with pytest.raises(png.PngError, match="5000x1 pixels .at most 2048"):
        png.check(huge + chunk(b"IDAT", zlib.compress(b"\0" * 5001)) + chunk(b"IEND", b""))
    bad_depth = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 3, 2, 0, 0, 0))
    with pytest.raises(png.PngError, match="does not exist"):
        png.check(bad_depth + chunk(b"IEND", b""))
    short = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 6, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    with pytest.raises(png.PngError, match="does not match"):
        png.check(short)
    filt = png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x09\x00")) + chunk(b"IEND", b"")
    with pytest.raises(png.PngError, match="unknown row filter 9"):
        png.check(filt)


def test_scaling_averages_areas_on_premultiplied_alpha() -> None:
    # Left half opaque red, right half transparent with a green that must not bleed.
    w, h = 64, 64
    pixels = [(255, 0, 0, 255) if x < 32 else (0, 255, 0, 0) for y in range(h) for x in range(w)]
    pic = png.Picture(w, h, b"".join(bytes(p) for p in pixels))
    scaled = png.squares(pic, layout.SIZES)
    assert sorted(scaled) == sorted(layout.SIZES)
    for size, out in scaled.items():
        assert (out.width, out.height, len(out.rgba)) == (size, size, size * size * 4)
        assert png.decode(png.encode(out)) == out
        # Every visible pixel is red: the transparent side's green never shows.
        for i in range(0, len(out.rgba), 4):
            if out.rgba[i + 3]:
                assert out.rgba[i + 1] == 0 and out.rgba[i] == 255
        assert out.rgba[3] == 255 and out.rgba[-1] == 0
    # A 22-pixel target from a 64-pixel source: the middle column is half covered.
    middle = scaled[22].rgba[(0 * 22 + 10) * 4 + 3], scaled[22].rgba[(0 * 22 + 11) * 4 + 3]
    assert middle == (255, 0)


def test_scaling_keeps_the_aspect_centred_and_enlarges() -> None:
    pic = png.Picture(4, 2, b"\x10\x20\x30\xff" * 8)
    out = png.squares(pic, (16,))[16]
    rows = [out.rgba[y * 64:(y + 1) * 64] for y in range(16)]
    assert all(set(r[3::4]) == {0} for r in rows[:4] + rows[12:])  # padding above, below
    assert all(r == b"\x10\x20\x30\xff" * 16 for r in rows[4:12])


# -- the codecs ---------------------------------------------------------------------


def test_desktop_and_icon_round_trip(image: ImageFile) -> None:  # noqa: F811
    assert image.read(settings.DESKTOP) is None and image.read(settings.ICON) is None
    assert image.read(settings.NOTIFY) == 0
    desktop = settings.Desktop("My App", ("Game",), ("ENTRY", "ICON"))
    image.write(settings.DESKTOP, desktop)
    image.write(settings.ICON, settings.Icon("svg", b"<svg/>"))
    image.write(settings.NOTIFY, 1)
    again = open_image(image.path)
    try:
        assert again.read(settings.DESKTOP) == desktop
        assert again.read(settings.ICON) == settings.Icon("svg", b"<svg/>")
        assert again.read(settings.NOTIFY) == 1
    finally:
        again.close()
    raw = settings.ICON.encode(settings.Icon("png", b"x" * 5))
    # FlatImage's struct: extension, data, u64 size in the region's last bytes.
    assert len(raw) == settings.ICON.region.size and raw[:4] == b"png\0"
    assert raw[-8:] == (5).to_bytes(8, "little")
    assert json.loads(settings.DESKTOP.encode(desktop)) == {
        "name": "My App", "integrations": ["ENTRY", "ICON"], "categories": ["Game"]}


def test_an_icon_larger_than_its_region_is_refused(image: ImageFile) -> None:  # noqa: F811
    image.write(settings.ICON, settings.Icon("png", b"old"))
    with pytest.raises(FimError, match="too large"):
        image.write(settings.ICON, settings.Icon("png", b"x" * (settings.ICON.capacity + 1)))
    assert image.read(settings.ICON) == settings.Icon("png", b"old")


# -- setup ----------------------------------------------------------------------------


def _json(tmp: Path, value: object, icon: bytes = b"", icon_name: str = "icon.png") -> str:
    if icon:
        (tmp / icon_name).write_bytes(icon)
    path = tmp / "desktop.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


GOOD_PNG = write_png(8, 8, [[200, 10, 10, 255]] * 64, 6, 8)


def test_setup_reads_flatimage_s_json(tmp_path: Path) -> None:
    sub = tmp_path / "art"
    sub.mkdir()
    (sub / "i.png").write_bytes(GOOD_PNG)
    got = setup.load(_json(tmp_path, {"name": "MyApp", "icon": "art/i.png",
                                      "categories": ["System", "Audio", "System"],
                                      "integrations": ["ICON", "entry"]}))
    # FlatImage's sets: categories sorted and each once, integrations in their order.
    assert got.desktop == settings.Desktop("MyApp", ("Audio", "System"), ("ENTRY", "ICON"))
    assert got.icon == settings.Icon("png", GOOD_PNG)
    svg = setup.load(_json(tmp_path, {"name": "S", "icon": "s.svg", "categories": ["X-Mine"]},
                           b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
                           "s.svg"))
    assert svg.icon.kind == "svg" and svg.desktop.integrations == ()


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ({"icon": "icon.png", "categories": []}, "missing field 'name'"),
    ({"name": "A", "categories": []}, "missing field 'icon'"),
    ({"name": "A", "icon": "icon.png"}, "missing field 'categories'"),
    ({"name": 3, "icon": "icon.png", "categories": []}, "'name' must be a string"),
    ({"name": "a/b", "icon": "icon.png", "categories": []}, "cannot contain the '/'"),
    ({"name": "A\nB", "icon": "icon.png", "categories": []}, "control characters"),
    ({"name": "A", "icon": "icon.png", "categories": "Game"}, "list of strings"),
    ({"name": "A", "icon": "icon.png", "categories": ["Gmae"]}, "unknown category 'Gmae'"),
    ({"name": "A", "icon": "icon.png", "categories": ["TrayIcon"]}, "reserved"),
    ({"name": "A", "icon": "icon.png", "categories": [], "integrations": ["MENU"]},
     "unknown integration 'MENU'"),
    ({"name": "A", "icon": "icon.png", "categories": [], "integrations": "ENTRY"},
     "'integrations' must be a list"),
    ({"name": "A", "icon": "icon.png", "categories": [], "categores": []},
     "unknown field 'categores'"),
    ({"name": "A", "icon": 5, "categories": []}, "'icon' must be a path"),
    ({"name": "A", "icon": "icon.jpg", "categories": []}, "extension '.jpg' is not supported"),
    ({"name": "A", "icon": "ftp://host/icon.png", "categories": []}, "only http and https"),
    ({"name": "A" * 200, "icon": "icon.png", "categories": []}, "longer than"),
])
def test_setup_refuses_bad_fields(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(FimError, match=message):
        setup.load(_json(tmp_path, value, GOOD_PNG))


def test_setup_checks_the_icon_itself(tmp_path: Path) -> None:
    base = {"name": "A", "icon": "icon.png", "categories": []}
    with pytest.raises(FimError, match="not a valid PNG image: no PNG signature"):
        setup.load(_json(tmp_path, base, b"just text"))
    with pytest.raises(FimError, match="too large"):
        setup.load(_json(tmp_path, base, GOOD_PNG + b"\0" * settings.ICON.capacity))
    svg = dict(base, icon="icon.svg")
    with pytest.raises(FimError, match="not 'svg'"):
        setup.load(_json(tmp_path, svg, b"<html/>", "icon.svg"))
    with pytest.raises(FimError, match="not well-formed"):
        setup.load(_json(tmp_path, svg, b"<svg>", "icon.svg"))
    (tmp_path / "icon.png").unlink()
    with pytest.raises(FimError, match="Cannot read icon .*No such file"):
        setup.load(_json(tmp_path, base))


def test_too_many_categories_do_not_fit_the_region(tmp_path: Path) -> None:
    many = [f"X-Category{i}" for i in range(400)]
    with pytest.raises(FimError, match="desktop region holds 4096"):
        setup.load(_json(tmp_path, {"name": "A", "icon": "icon.png", "categories": many},
                         GOOD_PNG))


def test_a_url_icon_without_network_is_one_message(tmp_path: Path) -> None:
    import socket

    # A port nothing listens on: refused at once, as a host without network answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FimError, match=f"Cannot fetch icon 'http://127.0.0.1:{port}/i.png'"):
        setup.load(_json(tmp_path, {"name": "A", "icon": f"http://127.0.0.1:{port}/i.png",
                                    "categories": []}))


def test_a_url_icon_that_never_answers_is_given_up_on_time() -> None:
    import socket
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts, never answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/i.png"
        start = time.monotonic()
        with pytest.raises(FimError, match="no answer within 1 seconds"):
            setup.fetch(url, deadline=1.0)
        assert time.monotonic() - start < 5


def test_a_url_icon_is_fetched(tmp_path: Path) -> None:
    import http.server
    import threading

    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "i.png").write_bytes(GOOD_PNG)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(tmp_path / "web"), **k)  # type: ignore[misc]

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/i.png"
        got = setup.load(_json(tmp_path, {"name": "A", "icon": url, "categories": []}))
        assert got.icon == settings.Icon("png", GOOD_PNG)
    finally:
        server.shutdown()


# -- the entry and the packages ---------------------------------------------------------


def test_exec_quoting_follows_the_desktop_entry_specification() -> None:
    assert layout.exec_argument("/a b/app") == '"/a b/app"'
    # " ` $ \ take a backslash inside quotes; the value's escaping doubles backslashes.
    assert layout.exec_argument('/x"y') == '"/x\\\\"y"'
    assert layout.exec_argument("/x$y`z") == '"/x\\\\$y\\\\`z"'
    assert layout.exec_argument("/x\\y") == '"/x\\\\\\\\y"'
    assert layout.exec_argument("/100%") == '"/100%%"'
    assert layout.entry_problem("/a\nb") and not layout.entry_problem("/a b")


def test_names_become_safe_ids() -> None:
    assert layout.app_id("MyApp") == "MyApp"  # FlatImage's names stay as they are
    assert layout.app_id("My App: 2") == "My_App__2"
    assert layout.mime_type("My App") == "application/flatimage_My_App"
    desktop = settings.Desktop("My App", ("Audio",), ("ENTRY", "MIMETYPE"))
    text = layout.entry(desktop, "/i/app", with_icon=False, with_mime=True)
    assert "Categories=AudioVideo;Audio;\n" in text and "Icon=" not in text
    assert "MimeType=application/flatimage_My_App;\n" in text
    assert '<glob weight="100" pattern="a[*]b[?][[].flatimage"/>' in layout.package(
        desktop, "/x/a*b?[.flatimage")


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-utils is not installed")
@pytest.mark.parametrize("path", ["/opt/My Apps/app.flatimage", '/t/"q" $v `c` 50%.flatimage',
                                  "/t/back\\slash.flatimage"])
def test_entries_for_odd_paths_validate(tmp_path: Path, path: str) -> None:
    desktop = settings.Desktop("Odd \\ Name", ("Game", "X-Own"), settings.INTEGRATIONS)
    entry = tmp_path / "flatimage-x.desktop"
    entry.write_text(layout.entry(desktop, path, with_icon=True, with_mime=True))
    r = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert r.returncode == 0 and "error" not in r.stdout, r.stdout


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-utils is not installed")
def test_every_registered_category_validates(tmp_path: Path) -> None:
    entry = tmp_path / "flatimage-x.desktop"
    for category in setup.MAIN_CATEGORIES + setup.ADDITIONAL_CATEGORIES:
        desktop = settings.Desktop("A", (category,), ("ENTRY",))
        entry.write_text(layout.entry(desktop, "/a", with_icon=False, with_mime=False))
        r = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True,
                           text=True)
        assert "error" not in r.stdout, r.stdout


# -- install and clean on a temporary XDG directory --------------------------------------


def _tree(root: Path) -> Dict[str, bytes]:
    found = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else b"/"
    return found


def _plan(name: str, image_path: str, integrations: Sequence[str] = settings.INTEGRATIONS
          ) -> List[layout.Planned]:
    desktop = settings.Desktop(name, ("Game",), tuple(integrations))
    icon = settings.Icon("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    return layout.plan(desktop, icon, image_path, lambda _i: {})


def test_install_refresh_and_clean_leave_exactly_what_was_there(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / "applications").mkdir(parents=True)
    (root / "applications" / "users-own.desktop").write_text("[Desktop Entry]\n")
    (root / "icons" / "hicolor").mkdir(parents=True)
    before = _tree(root)
    say = install.Say(False)
    env = dict(os.environ)
    install.apply(str(root), "aaaa", "s1", lambda: _plan("One", "/x/one.flatimage"), env, say)
    install.apply(str(root), "bbbb", "s1", lambda: _plan("Two", "/x/two.flatimage"), env, say)
    assert (root / "applications/flatimage-One.desktop").exists()
    assert (root / "icons/hicolor/scalable/apps/flatimage_Two.svg").exists()
    # Same stamp: nothing is asked again.
    install.apply(str(root), "aaaa", "s1", lambda: pytest.fail("replanned"), env, say)
    # One moves and loses its icon integration: its icons go, its entry follows.
    install.apply(str(root), "aaaa", "s2",
                  lambda: _plan("One", "/y/one.flatimage", ("ENTRY", "MIMETYPE")), env, say)
    assert not (root / "icons/hicolor/scalable/apps/flatimage_One.svg").exists()
    assert '"/y/one.flatimage"' in (root / "applications/flatimage-One.desktop").read_text()
    # The generic package is both images': it stays while one of them has it.
    install.clean(str(root), "aaaa", env, say)
    assert (root / layout.GENERIC_PACKAGE).exists()
    assert not (root / "applications/flatimage-One.desktop").exists()
    install.clean(str(root), "bbbb", env, say)
    assert _tree(root) == before


def test_a_file_fim_did_not_install_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "share"
    theirs = root / "applications" / "flatimage-One.desktop"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Desktop Entry]\nName=FlatImage's own\n")
    env = dict(os.environ)
    install.apply(str(root), "aaaa", "s1", lambda: _plan("One", "/x/one.flatimage"), env,
                  install.Say(False))
    assert theirs.read_text() == "[Desktop Entry]\nName=FlatImage's own\n"
    install.clean(str(root), "aaaa", env, install.Say(False))
    assert _tree(root) == {"applications": b"/", "applications/flatimage-One.desktop":
                           b"[Desktop Entry]\nName=FlatImage's own\n"}


def test_a_clean_that_finds_nothing_makes_nothing(tmp_path: Path) -> None:
    install.clean(str(tmp_path), "aaaa", dict(os.environ), install.Say(False))
    assert list(tmp_path.iterdir()) == []


def test_images_ids_share_nothing_but_the_generic_package(tmp_path: Path) -> None:
    one = {p.rel for p in _plan("One", "/a.flatimage")}
    two = {p.rel for p in _plan("Two", "/b.flatimage")}
    assert one & two == {layout.GENERIC_PACKAGE}


def test_stamp_changes_with_the_file_and_the_settings(tmp_path: Path) -> None:
    import time

    from fim.runtime.desktop import stamp

    handle = open_image(str(make_image(tmp_path / "a.flatimage")))
    try:
        desktop = settings.Desktop("A", (), ("ENTRY",))
        first = stamp.of(handle, desktop)
        assert first and stamp.of(handle, settings.Desktop("A", (), ())) == ""
        assert stamp.of(handle, None) == ""
        assert stamp.of(handle, settings.Desktop("B", (), ("ENTRY",))) != first
        time.sleep(0.02)  # past the file system's clock tick
        handle.write(settings.NOTIFY, 1)  # any write touches the file
        assert stamp.of(handle, desktop) != first
    finally:
        handle.close()


@pytest.mark.skipif(shutil.which("gtk-update-icon-cache") is None,
                    reason="gtk-update-icon-cache is not installed")
def test_an_icon_cache_the_user_has_is_refreshed_and_none_is_made(tmp_path: Path) -> None:
    env = dict(os.environ)
    fresh = tmp_path / "fresh"
    install.apply(str(fresh), "aaaa", "s1", lambda: _plan("One", "/a.flatimage"), env,
                  install.Say(False))
    assert not (fresh / "icons/hicolor/icon-theme.cache").exists()
    root = tmp_path / "share"
    theme = root / "icons" / "hicolor"
    (theme / "16x16" / "apps").mkdir(parents=True)
    (theme / "16x16" / "apps" / "theirs.png").write_bytes(GOOD_PNG)  # an empty theme has none
    subprocess.run(["gtk-update-icon-cache", "-q", "-t", "-f", str(theme)], check=True)
    cache = theme / "icon-theme.cache"
    assert b"flatimage_One" not in cache.read_bytes()
    install.apply(str(root), "aaaa", "s1", lambda: _plan("One", "/a.flatimage"), env,
                  install.Say(False))
    assert b"flatimage_One" in cache.read_bytes()
    install.clean(str(root), "aaaa", env, install.Say(False))
    assert cache.exists() and b"flatimage_One" not in cache.read_bytes()

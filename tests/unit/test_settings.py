"""The reserved-space codecs, read and written through the image handle, on a small
synthetic image (header and reserved space only: no layers, no tools)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from fim.runtime.errors import FimError
from fim.runtime.image import reserved, settings
from fim.runtime.image.file import ImageFile, open_image
from fim.runtime.image.header import HEADER_OFFSET, LAUNCHER_SIZE, Header, align


def make_image(path: Path) -> Path:
    """Launcher space, a header and an empty reserved space and journal."""
    res = LAUNCHER_SIZE + 4096
    journal = align(res + reserved.RESERVED_SIZE)
    end = align(journal + reserved.JOURNAL_SIZE)
    head = Header(reserved_offset=res, reserved_size=reserved.RESERVED_SIZE,
                  journal_offset=journal, journal_size=reserved.JOURNAL_SIZE,
                  payload_offset=end, payload_size=0, chain_offset=end, build_id="unit")
    with open(path, "wb") as f:
        f.write(b"#!/bin/sh\n".ljust(LAUNCHER_SIZE, b"\n"))
        f.write(head.pack())
        f.truncate(end)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Iterator[ImageFile]:
    handle = open_image(str(make_image(tmp_path / "a.flatimage")))
    yield handle
    handle.close()


def _poke(handle: ImageFile, region: str, data: bytes) -> None:
    fd = os.open(handle.path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, handle.header.reserved_offset + reserved.REGIONS[region].offset)
    finally:
        os.close(fd)


def test_unset_settings_read_as_defaults(image: ImageFile) -> None:
    assert image.read(settings.PERMISSIONS) == 0
    assert image.read(settings.UNSHARE) == 0
    assert image.read(settings.OVERLAY) == 0 and image.read(settings.CASEFOLD) == 0
    assert image.read(settings.ENVIRONMENT) == []
    assert image.read(settings.BINDINGS) == []
    assert image.read(settings.BOOT) is None
    assert image.chain().elements == [] and image.chain().torn is None


def test_round_trips(image: ImageFile) -> None:
    image.write(settings.PERMISSIONS, settings.PERMISSIONS.parse("home,network,dev"))
    image.write(settings.UNSHARE, settings.UNSHARE.parse("all"))
    image.write(settings.OVERLAY, 4)
    image.write(settings.CASEFOLD, 1)
    image.write(settings.ENVIRONMENT, ["A=1", "B=$A"])
    image.write(settings.BINDINGS, [settings.Binding("ro", "$HOME", "/h")])
    image.write(settings.BOOT, settings.Boot("prog", ["-x", "é"]))
    again = open_image(image.path)
    try:
        assert settings.PERMISSIONS.named(again.read(settings.PERMISSIONS)) == [
            "home", "network", "dev"]
        assert settings.UNSHARE.named(again.read(settings.UNSHARE)) == list(
            settings.NAMESPACE_NAMES)
        assert again.read(settings.OVERLAY) == 4 and again.read(settings.CASEFOLD) == 1
        assert again.read(settings.ENVIRONMENT) == ["A=1", "B=$A"]
        assert again.read(settings.BINDINGS) == [settings.Binding("ro", "$HOME", "/h")]
        assert again.read(settings.BOOT) == settings.Boot("prog", ["-x", "é"])
    finally:
        again.close()
    image.write(settings.BOOT, None)
    image.write(settings.ENVIRONMENT, [])
    assert image.read(settings.BOOT) is None and image.read(settings.ENVIRONMENT) == []


def test_permission_bits_follow_flatimage() -> None:
    assert settings.PERMISSIONS.parse("home") == 1
    assert settings.PERMISSIONS.parse("network") == 1 << 11
    # FlatImage's 15 keep their bits; ours follow.
    assert settings.PERMISSIONS.parse("dev") == 1 << 14
    assert settings.PERMISSIONS.parse("portal") == 1 << 15
    assert settings.PERMISSIONS.parse("all") == (1 << 16) - 1
    assert settings.UNSHARE.parse("net,ipc") == 0b1010


@pytest.mark.parametrize(("text", "message"), [
    ("home,bogus", "Invalid permission 'BOGUS'"),
    ("none", "Invalid permission 'NONE'"),
    ("all,home", "Permission 'all' should not be used with others"),
])
def test_bad_lists(text: str, message: str) -> None:
    with pytest.raises(FimError, match=message):
        settings.PERMISSIONS.parse(text)


@pytest.mark.parametrize(("region", "data"), [
    ("environment", b"not json"),
    ("environment", b'["NOEQUALS"]'),
    ("bindings", b'[{"type": "xx", "src": "/a", "dst": "/b"}]'),
    ("bindings", b'{"0": 1}'),
    ("boot", b'{"program": 3, "args": []}'),
    ("boot", b"\xff\xfe"),
])
def test_damaged_regions_are_one_message_or_the_default(image: ImageFile, region: str,
                                                         data: bytes) -> None:
    _poke(image, region, data)
    codec = {"environment": settings.ENVIRONMENT, "bindings": settings.BINDINGS,
             "boot": settings.BOOT}[region]
    with pytest.raises(FimError, match=f"The '{region}' setting of the image is corrupted"):
        image.read(codec)
    problems: list = []
    assert image.read_or(codec, problems) == codec.default()
    assert len(problems) == 1


def test_values_too_large_are_refused_and_the_old_kept(image: ImageFile) -> None:
    image.write(settings.BOOT, settings.Boot("old", []))
    with pytest.raises(FimError, match="too large"):
        image.write(settings.BOOT, settings.Boot("x" * 9000, []))
    assert image.read(settings.BOOT) == settings.Boot("old", [])


def test_a_long_json_region_is_read_whole(image: ImageFile) -> None:
    entries = [f"K{i}=" + "v" * 100 for i in range(2000)]  # ~210 KB: several read chunks
    image.write(settings.ENVIRONMENT, entries)
    assert image.read(settings.ENVIRONMENT) == entries


def test_not_an_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * (HEADER_OFFSET + 4096))
    with pytest.raises(FimError, match="is not a fim image"):
        open_image(str(junk))
    with pytest.raises(FimError, match="Cannot read image"):
        open_image(str(tmp_path / "missing"))

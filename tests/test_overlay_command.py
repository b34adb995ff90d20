"""fim-overlay set/show and the priority FIM_OVERLAY > reserved byte > BWRAP."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Runner

from fim.runtime.image import header
from fim.runtime.image.reserved import REGIONS


def overlay_byte(image: Path) -> int:
    head = header.read(str(image))
    with open(image, "rb") as f:
        f.seek(head.reserved_offset + REGIONS["overlay"].offset)
        return f.read(1)[0]


def test_default_is_bwrap(image: Path, runner: Runner) -> None:
    r = runner.run([str(image), "fim-overlay", "show"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "BWRAP\n", "")
    assert overlay_byte(image) == 0


@pytest.mark.parametrize("name,shown,bit", [
    ("bwrap", "BWRAP", 1 << 1), ("overlayfs", "OVERLAYFS", 1 << 2), ("unionfs", "UNIONFS", 1 << 3),
])
def test_set_stores_the_bitmask_at_offset_9(image: Path, runner: Runner, name: str, shown: str,
                                            bit: int) -> None:
    r = runner.run([str(image), "fim-overlay", "set", name])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert overlay_byte(image) == bit
    assert runner.run([str(image), "fim-overlay", "show"]).stdout == shown + "\n"


def test_environment_overrides_and_invalid_values_are_ignored(image: Path, runner: Runner) -> None:
    runner.run([str(image), "fim-overlay", "set", "unionfs"])
    show = [str(image), "fim-overlay", "show"]
    assert runner.run(show, env={"FIM_OVERLAY": "overlayfs"}).stdout == "OVERLAYFS\n"
    assert runner.run(show, env={"FIM_OVERLAY": "bwrap"}).stdout == "BWRAP\n"
    assert runner.run(show, env={"FIM_OVERLAY": ""}).stdout == "UNIONFS\n"
    assert runner.run(show, env={"FIM_OVERLAY": "zfs"}).stdout == "UNIONFS\n"


def test_show_tells_the_backend_that_will_run(image: Path, runner: Runner) -> None:
    show = [str(image), "fim-overlay", "show"]
    assert runner.run([str(image), "fim-casefold", "on"]).returncode == 0
    # BWRAP (the default) cannot stack casefold: UNIONFS runs, and FIM_DEBUG says why.
    assert runner.run(show).stdout == "UNIONFS\n"
    r = runner.run(show, env={"FIM_DEBUG": "1"})
    assert r.stdout.splitlines() == [
        "D::Overlay asked for: BWRAP (the default)",
        "D::Overlay that runs: UNIONFS (casefold is on and BWRAP cannot stack it)",
        "UNIONFS"]
    assert runner.run(show, env={"FIM_OVERLAY": "overlayfs"}).stdout == "OVERLAYFS\n"
    runner.run([str(image), "fim-overlay", "set", "overlayfs"])
    r = runner.run(show, env={"FIM_DEBUG": "1"})
    assert r.stdout.splitlines() == ["D::Overlay asked for: OVERLAYFS (fim-overlay set)",
                                     "OVERLAYFS"]


@pytest.mark.parametrize("args,message", [
    (["set"], "E::Missing argument for 'set'"),
    (["set", "zfs"], "E::Invalid overlay type"),
    (["set", "bwrap", "a", "b"], "E::Trailing arguments for fim-overlay: ['a','b',]"),
    (["show", "x"], "E::Trailing arguments for fim-overlay: ['x',]"),
])
def test_usage_errors(image: Path, runner: Runner, args: list, message: str) -> None:
    before = image.read_bytes()
    r = runner.run([str(image), "fim-overlay", *args])
    assert (r.returncode, r.stdout, r.stderr) == (125, "", message + "\n")
    assert image.read_bytes() == before

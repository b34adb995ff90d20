"""overlays: the backend records, the choice between them, their modules' interface."""

from __future__ import annotations

import pytest

from fim.runtime import overlays


def test_records_follow_flatimage() -> None:
    assert [(b.name, b.bit) for b in overlays.BACKENDS] == [
        ("BWRAP", 2), ("OVERLAYFS", 4), ("UNIONFS", 8)]
    assert [b.debug_name for b in overlays.BACKENDS] == ["BWRAP", "FUSE_OVERLAYFS", "UNIONFS_FUSE"]
    assert all(b.leaves in b.reads for b in overlays.BACKENDS)


@pytest.mark.parametrize(("env", "stored", "expected"), [
    ({}, 0, "BWRAP"),
    ({}, 4, "OVERLAYFS"),
    ({}, 8, "UNIONFS"),
    ({}, 6, "BWRAP"),  # not one bit: unset
    ({"FIM_OVERLAY": "unionfs"}, 4, "UNIONFS"),
    ({"FIM_OVERLAY": " OverlayFS "}, 8, "OVERLAYFS"),
    ({"FIM_OVERLAY": ""}, 8, "UNIONFS"),
    ({"FIM_OVERLAY": "zfs"}, 4, "OVERLAYFS"),
])
def test_choice(env: dict, stored: int, expected: str) -> None:
    assert overlays.choose(env, stored).name == expected


def test_casefold_needs_a_root_it_can_stack_on() -> None:
    assert overlays.effective(overlays.BWRAP, True) is overlays.UNIONFS
    assert overlays.effective(overlays.BWRAP, False) is overlays.BWRAP
    assert overlays.effective(overlays.OVERLAYFS, True) is overlays.OVERLAYFS


def test_every_backend_module_has_the_interface() -> None:
    for backend in overlays.BACKENDS:
        module = overlays.implementation(backend)
        assert callable(module.build) and callable(module.refused)
        if backend.tool:
            assert backend.tool == module.TOOL


def test_alternatives_name_the_others() -> None:
    text = overlays.alternatives(overlays.OVERLAYFS)
    assert "FIM_OVERLAY=bwrap|unionfs" in text and "fim-overlay set bwrap|unionfs" in text


def test_native_root_is_arguments_only() -> None:
    from fim.runtime.overlays import bwrap

    spec = overlays.RootSpec(layers=(), lowers=("/l1", "/l0"), upper="/u", work="/w",
                             mountpoint="/m", scratch="/s", cache="/c", logs="/g",
                             runtime="/r", environ={})
    from fim.runtime.unwind import Stack

    with Stack() as stack:
        root = bwrap.build(stack, spec)
        assert len(stack) == 0
    assert root.args == ["--overlay-src", "/l0", "--overlay-src", "/l1", "--overlay", "/u", "/w",
                         "/"]
    assert root.branches == ["/u", "/l1", "/l0"] and root.merged is None


def test_fuse_command_lines() -> None:
    from fim.runtime.overlays import fuse_overlayfs, unionfs

    assert fuse_overlayfs.mount_argv(["fo"], ["/a", "/b"], "/u", "/w", "/m") == [
        "fo", "-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w,static_nlink", "/m"]
    assert unionfs.mount_argv(["un"], ["/a", "/b"], "/u", "/m") == [
        "un", "-o", "cow,hide_meta_files", "/u=RW:/a=RO:/b=RO", "/m"]
    # The keeper's, shared by its instances: the kernel caches for a day.
    shared = unionfs.mount_argv(["un"], ["/a"], "/u", "/m", shared=True)
    assert shared[2] == ("cow,hide_meta_files,entry_timeout=86400,attr_timeout=86400,"
                         "negative_timeout=86400,auto_cache"), shared


def test_layer_formats_are_found_by_their_module_magic(tmp_path: object) -> None:
    import os

    from fim.runtime import layers

    for name, (magic, _) in layers.FORMATS.items():
        module = layers.module_of(name)
        assert magic == module.MAGIC
        path = os.path.join(str(tmp_path), name)
        with open(path, "wb") as f:
            f.write(b"\0" * 16 + magic + b"rest")
        assert layers.detect(path, 16) == name
        assert layers.detect(path, 0) is None

"""Deletion markers: the canonical form, the FUSE backends' forms and the conversions
between them; reading the merged root unmounted (rootview); the upper dir's state."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fim.runtime import rootview
from fim.runtime.errors import FimError
from fim.runtime.overlays import BWRAP, OVERLAYFS, UNIONFS, upperdir, whiteouts
from fim.runtime.unwind import Stack

needs_mknod = pytest.mark.skipif(os.getuid() != 0, reason="whiteout devices need root")


def _tree(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _whiteout(path: Path) -> bool:
    return whiteouts.is_whiteout(os.lstat(path))


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    base = tmp_path / "lower"
    _tree(base, {"a/keep": "k", "a/gone": "g", "dir/x": "x", "dir/sub/y": "y", "top": "t"})
    os.chmod(base / "dir", 0o750)
    return base


@needs_mknod
def test_unionfs_form_to_canonical(tmp_path: Path, lower: Path) -> None:
    upper = tmp_path / "upper"
    meta = upper / ".unionfs-fuse"
    # unionfs-fuse's record of `rm a/gone`, `rm -r dir` (one marker per entry), and a
    # directory removed and made again (`top` was a file: replaced, no marker needed).
    _tree(meta, {"a/gone_HIDDEN~": "", "dir/x_HIDDEN~": "", "dir/sub/y_HIDDEN~": ""})
    (meta / "dir_HIDDEN~").mkdir()
    (meta / "dir" / "sub_HIDDEN~").mkdir()
    _tree(upper, {"top": "new"})
    (meta / "top_HIDDEN~").write_text("")
    whiteouts.to_canonical(str(upper), [str(lower)])
    assert not meta.exists()
    assert _whiteout(upper / "a" / "gone") and _whiteout(upper / "dir")
    assert stat.S_IMODE(os.stat(upper / "a").st_mode) == stat.S_IMODE(os.stat(lower / "a").st_mode)
    assert not (upper / "dir" / "sub").exists() or not (upper / "dir").is_dir()
    assert (upper / "top").read_text() == "new"
    branches = [str(upper), str(lower)]
    assert rootview.resolve(branches, "/a/gone") is None
    assert rootview.resolve(branches, "/dir/x") is None
    assert rootview.read_text(branches, "/a/keep") == "k"


@needs_mknod
def test_recreated_directory_becomes_opaque(tmp_path: Path, lower: Path) -> None:
    upper = tmp_path / "upper"
    meta = upper / ".unionfs-fuse"
    (meta / "dir_HIDDEN~").mkdir(parents=True)
    _tree(upper, {"dir/new": "n"})
    whiteouts.to_canonical(str(upper), [str(lower)])
    assert whiteouts.is_opaque(str(upper / "dir"))
    branches = [str(upper), str(lower)]
    assert rootview.resolve(branches, "/dir/x") is None
    assert rootview.read_text(branches, "/dir/new") == "n"


@needs_mknod
def test_fuse_overlayfs_form_to_canonical(tmp_path: Path, lower: Path) -> None:
    upper = tmp_path / "upper"
    _tree(upper, {"a/.wh.gone": "", "dir/.wh..wh..opq": "", "dir/new": "n"})
    os.setxattr(upper / "dir", "user.fuseoverlayfs.opaque", b"y")
    whiteouts.to_canonical(str(upper), [str(lower)])
    assert _whiteout(upper / "a" / "gone") and not (upper / "a" / ".wh.gone").exists()
    assert sorted(os.listdir(upper / "dir")) == ["new"]
    assert os.getxattr(upper / "dir", whiteouts.OPAQUE) == b"y"
    with pytest.raises(OSError):
        os.getxattr(upper / "dir", "user.fuseoverlayfs.opaque")


@needs_mknod
def test_canonical_to_unionfs_and_back(tmp_path: Path, lower: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "a").mkdir(parents=True)
    whiteouts.make_whiteout(str(upper / "a" / "gone"))
    (upper / "dir").mkdir()
    whiteouts.set_opaque(str(upper / "dir"))
    whiteouts.to_unionfs(str(upper))
    meta = upper / ".unionfs-fuse"
    assert (meta / "a" / "gone_HIDDEN~").is_file() and (meta / "dir_HIDDEN~").exists()
    assert not (upper / "a" / "gone").exists()
    whiteouts.to_canonical(str(upper), [str(lower)])
    assert _whiteout(upper / "a" / "gone") and whiteouts.is_opaque(str(upper / "dir"))


@needs_mknod
def test_scan_of_a_layer(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    whiteouts.make_whiteout(str(layer / "d" / "w"))
    whiteouts.set_opaque(str(layer / "d"))
    assert whiteouts.scan(str(layer)) == (["d/w"], ["d"])


def test_rootview_follows_symlinks_across_branches(tmp_path: Path) -> None:
    up, low = tmp_path / "up", tmp_path / "low"
    _tree(low, {"usr/bin/real": "r", "etc/passwd": "p"})
    (low / "bin").symlink_to("usr/bin")
    (up / "usr" / "bin").mkdir(parents=True)
    (up / "usr" / "bin" / "link").symlink_to("/bin/real")
    branches = [str(up), str(low)]
    assert rootview.resolve(branches, "/usr/bin/link") == str(low / "usr/bin/real")
    assert rootview.which(branches, "real", "/nope:/bin") == str(low / "usr/bin/real")
    assert rootview.which(branches, "missing", "/bin") is None
    assert rootview.read_text(branches, "/etc/passwd") == "p"


def _state(path: Path) -> str:
    return path.read_text().strip()


def test_upper_dir_state_machine(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    state = tmp_path / "overlay.state"
    with Stack() as stack:
        upperdir.claim(stack, str(state), str(upper), BWRAP, [])
        assert _state(state) == "kernel"
        # A second instance with a backend that reads the same form shares it.
        with Stack() as other:
            upperdir.claim(other, str(state), str(upper), BWRAP, [])
        # One that needs another form is refused while the first runs.
        with pytest.raises(FimError, match="in use by a running instance with the BWRAP "
                           "overlay, and this run needs the UNIONFS overlay"), Stack() as s:
            upperdir.claim(s, str(state), str(upper), UNIONFS, [])
        with pytest.raises(FimError, match="in use by a running instance"), Stack() as s:
            upperdir.canonical(s, str(state), str(upper))
    with Stack() as stack:
        upperdir.claim(stack, str(state), str(upper), UNIONFS, [])
    assert _state(state) == "unionfs"
    with Stack() as stack:
        upperdir.claim(stack, str(state), str(upper), OVERLAYFS, [])
    assert _state(state) == "fuse-overlayfs"
    with Stack() as stack:
        upperdir.canonical(stack, str(state), str(upper))
    assert _state(state) == "kernel"
    # A conversion cut short leaves "unknown": the next run converts again.
    state.write_text("unknown\n")
    with Stack() as stack:
        upperdir.claim(stack, str(state), str(upper), OVERLAYFS, [])
    assert _state(state) == "fuse-overlayfs"


def _claim_and_hold(state: str, upper: str, name: str, ready: Any) -> int:
    import time

    backend = {"BWRAP": BWRAP, "OVERLAYFS": OVERLAYFS, "UNIONFS": UNIONFS}[name]
    ready.wait()  # all at once
    try:
        with Stack() as stack:
            upperdir.claim(stack, state, upper, backend, [])
            time.sleep(0.05)  # held while the others start
    except FimError as e:
        print(e.message)
        return 1
    return 0


def _exit_with(state: str, upper: str, name: str, ready: Any) -> None:
    os._exit(_claim_and_hold(state, upper, name, ready))


def test_simultaneous_first_claims_never_conflict(tmp_path: Path) -> None:
    """Processes claiming at once on a fresh data dir (and then, all at once, for another
    backend once the first ones are gone) all get the directory: none sees the others'
    brief shared locks as a running instance of another form."""
    import multiprocessing

    upper = tmp_path / "upper"
    upper.mkdir()
    state = str(tmp_path / "overlay.state")
    ctx = multiprocessing.get_context("fork")
    for name in ("BWRAP", "UNIONFS", "OVERLAYFS") * 2:
        ready = ctx.Barrier(24)
        procs = [ctx.Process(target=_exit_with, args=(state, str(upper), name, ready))
                 for _ in range(24)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        assert [proc.exitcode for proc in procs] == [0] * len(procs), name


def test_rootview_reads_opacity_only_above_something(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The bottom branch hides nothing: its directories' xattrs are never read (on a
    # layer each read is a FUSE round trip), the ones above it are.
    branches = []
    for name in ("upper", "l1", "l0"):
        _tree(tmp_path / name, {f"etc/{name}": name})
        branches.append(str(tmp_path / name))
    asked = []
    real = rootview.is_opaque

    def counting(path: str) -> bool:
        asked.append(os.path.relpath(path, tmp_path))
        return real(path)

    monkeypatch.setattr(rootview, "is_opaque", counting)
    assert rootview.read_text(branches, "/etc/l0") == "l0"
    assert asked == ["upper/etc", "l1/etc"]
    asked.clear()
    assert rootview.read_text(branches[2:], "/etc/l0") == "l0"
    assert asked == []
    os.setxattr(tmp_path / "l1" / "etc", whiteouts.OPAQUE, b"y")
    assert rootview.read_text(branches, "/etc/l0") is None
    assert rootview.read_text(branches, "/etc/l1") == "l1"

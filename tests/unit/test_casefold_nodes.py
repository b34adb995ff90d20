"""casefold's node table with inode numbers that repeat, as fuse-overlayfs passes them
through from its layers: distinct files stay distinct nodes, hard links stay one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict

from fim.runtime.casefold.nodes import PATH, NodeTable

FILE, DIR = 0o100644, 0o040755


def st(ino: int, mode: int = FILE, nlink: int = 1, size: int = 1, mtime: int = 1) -> Any:
    return SimpleNamespace(st_dev=50, st_ino=ino, st_mode=mode, st_nlink=nlink, st_size=size,
                           st_mtime_ns=mtime, st_ctime_ns=mtime)


def table(files: Dict[str, Any]) -> NodeTable:
    return NodeTable(st(1, DIR, 2), lambda _path: None, lambda path: files[path])


def test_files_sharing_a_number_are_different_nodes() -> None:
    files = {"usr/bin/seq": st(265, size=10), "win/d3dx9_41.dll": st(265, size=99)}
    t = table(files)
    a = t.remember("usr/bin/seq", files["usr/bin/seq"], None)
    b = t.remember("win/d3dx9_41.dll", files["win/d3dx9_41.dll"], None)
    assert a is not b and a.paths == ["usr/bin/seq"] and b.paths == ["win/d3dx9_41.dll"]
    assert t.remember("usr/bin/seq", files["usr/bin/seq"], None) is a and a.nlookup == 2
    # Directories too (a number repeated by a directory of another layer).
    d1 = t.remember("dev", st(7, DIR, 3), None)
    d2 = t.remember("home/.wine", st(7, DIR, 3), None)
    assert d1 is not d2


def test_other_spellings_of_files_sharing_a_number() -> None:
    files = {"a/Foo": st(9), "b/Foo": st(9, size=2)}
    t = table(files)
    x = t.remember("a/Foo", files["a/Foo"], "foo")
    y = t.remember("b/Foo", files["b/Foo"], "foo")
    assert x is not y and not x.exact


def test_hard_links_are_one_node_and_a_lookalike_is_not() -> None:
    link = st(40, nlink=2, size=5)
    files = {"x/one": link, "x/two": link, "y/other": st(40, nlink=2, size=6)}
    t = table(files)
    one = t.remember("x/one", link, None)
    assert one.key == (50, 40)
    assert t.remember("x/two", link, None) is one and one.paths == ["x/two", "x/one"]
    other = t.remember("y/other", files["y/other"], None)
    assert other is not one and other.key == (PATH, "y/other")


def test_renames_carry_path_keys_and_a_directorys_contents() -> None:
    files = {"d": st(2, DIR, 2), "d/f": st(3), "g": st(3)}
    t = table(files)
    d = t.remember("d", files["d"], None)
    f = t.remember("d/f", files["d/f"], None)
    t.moved("d", "e", files["d"], d)
    assert d.key == (PATH, "e") and f.key == (PATH, "e/f") and f.paths == ["e/f"]
    assert t.remember("e/f", files["d/f"], None) is f
    # A new file where the old one was is another node; so is a replaced target.
    assert t.remember("d/f", st(3), None) is not f
    g = t.remember("g", files["g"], None)
    t.unlinked("g", files["g"])
    t.moved("e/f", "g", files["d/f"], f)
    assert f.key == (PATH, "g") and g.paths == []
    assert t.remember("g", files["d/f"], None) is f

"""Recipes without the network: names, parsing, dependency resolution, cycles, order."""

from __future__ import annotations

import pytest

from fim.runtime import recipes
from fim.runtime.errors import FimError


def recipe(name: str, packages: tuple = (), deps: tuple = ()) -> recipes.Recipe:
    return recipes.Recipe(name, None, tuple(packages), tuple(deps), None, b"{}")


def test_names() -> None:
    assert recipes.names("gpu,audio") == ["gpu", "audio"]
    for bad in ("", "a,", ",a", "a,,b"):
        with pytest.raises(FimError, match="Recipe argument is empty"):
            recipes.names(bad)
    for bad in ("../x", "a/b", ".hidden", "sp ace", "é"):
        with pytest.raises(FimError, match="Invalid recipe name"):
            recipes.names(bad)


def test_parse() -> None:
    r = recipes.parse("x", b'{"description": "d", "packages": ["a", "b"], '
                           b'"dependencies": ["y"]}', "u")
    assert (r.description, r.packages, r.dependencies) == ("d", ("a", "b"), ("y",))
    for raw, message in ((b"{", "is not valid JSON"), (b"[]", "is not a JSON object"),
                         (b'{"packages": "a"}', "'packages' must be a list"),
                         (b'{}', "'packages' must be a list"),
                         (b'{"packages": [], "dependencies": [1]}', "'dependencies' must be"),
                         (b'{"packages": [], "description": 3}', "'description' must be"),
                         (b'{"packages": [], "dependencies": ["../e"]}', "Invalid recipe name"),
                         (b"\xff", "is not valid JSON")):
        with pytest.raises(FimError, match=message):
            recipes.parse("x", raw, "http://h/x.json")


def test_resolution_order_and_cycles() -> None:
    # a -> b, c; b -> d; c -> d (a diamond is no cycle)
    book = {"a": recipe("a", ("pa",), ("b", "c")), "b": recipe("b", ("pb", "shared"), ("d",)),
            "c": recipe("c", ("pc", "shared"), ("d",)), "d": recipe("d", ("pd",))}
    asked = []

    def get(name: str) -> recipes.Recipe:
        asked.append(name)
        return book[name]

    found = recipes.resolve(["a"], get)
    assert sorted(found) == ["a", "b", "c", "d"] and sorted(asked) == ["a", "b", "c", "d"]
    assert recipes.install_order(["a"], found) == ["pd", "pb", "shared", "pc", "pa"]
    book["d"] = recipe("d", ("pd",), ("a",))
    with pytest.raises(FimError, match=r"Cyclic dependency for recipe 'a' \(a -> b -> d -> a\)"):
        recipes.resolve(["a"], book.__getitem__)
    book["d"] = recipe("d", ("pd",), ("d",))
    with pytest.raises(FimError, match="Cyclic dependency for recipe 'd'"):
        recipes.resolve(["d"], book.__getitem__)


def test_urls_and_info() -> None:
    assert recipes.url_of("http://h/r/", "debian", "gpu") == "http://h/r/debian/latest/gpu.json"
    assert recipes.url_of("http://h/r", "debian", "gpu") == "http://h/r/debian/latest/gpu.json"
    r = recipes.Recipe("gpu", "GPU things", ("mesa",), ("xorg",), None, b"")
    assert recipes.info_lines(r, "/c/gpu.json") == [
        "Recipe: gpu", "Location: /c/gpu.json", "Description: GPU things", "Dependencies: 1",
        "  - xorg", "Package count: 1", "Packages:", "  - mesa"]

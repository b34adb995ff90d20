"""Recipes: named package sets, fetched from the image's remote (fim-remote), cached in
its data directory, installed with the image's package manager.

A recipe is JSON at `REMOTE/DISTRO/latest/NAME.json` (DISTRO: the image's
distribution in lower case, `debian`), cached at
`DATA/recipes/DISTRO/latest/NAME.json`, as FlatImage lays them out:

    {"description": "...", "packages": ["a", "b"], "dependencies": ["other"],
     "desktop": {...}}

`packages` is required; the rest is optional. A fetch reads a recipe and every
recipe it depends on, recursively, into memory; checks names, types and cycles;
and only then writes them into the cache (each file atomically), so a failure
anywhere leaves the cache as it was. Installing takes the recipes' packages in
dependency order (a recipe's dependencies before it, each package once).
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

    Fetch = Callable[[str], bytes]

# How long one download may wait for the server (connect, then each read).
DEFAULT_TIMEOUT = 30.0
MAX_RECIPE = 1 << 20  # a recipe is a small JSON file


@dataclass(frozen=True)
class Recipe:
    name: str
    description: Optional[str]
    packages: Tuple[str, ...]
    dependencies: Tuple[str, ...]
    desktop: Optional[Mapping[str, object]]
    raw: bytes  # as fetched: what the cache keeps


def check_name(name: str) -> str:
    """A recipe name becomes a file name and a URL path: letters, digits, . _ + -."""
    if not name or name.startswith(".") or not all(
            c.isascii() and (c.isalnum() or c in "._+-") for c in name):
        raise FimError(f"Invalid recipe name '{name}'")
    return name


def names(argument: str) -> List[str]:
    """`a,b,c` as FlatImage takes it; empty items are an error."""
    items = argument.split(",")
    if not argument or any(not item for item in items):
        raise FimError("Recipe argument is empty")
    return [check_name(item) for item in items]


def parse(name: str, raw: bytes, origin: str) -> Recipe:
    """One recipe's JSON, checked; `origin` (its URL or cache path) names it in errors."""
    import json

    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FimError(f"Recipe '{name}' from '{origin}' is not valid JSON: {e}") from None

    def strings(key: str, required: bool) -> Tuple[str, ...]:
        items = value.get(key)
        if items is None and not required:
            return ()
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise FimError(f"Recipe '{name}' from '{origin}': '{key}' must be a list of names")
        return tuple(items)

    if not isinstance(value, dict):
        raise FimError(f"Recipe '{name}' from '{origin}' is not a JSON object")
    description = value.get("description")
    if description is not None and not isinstance(description, str):
        raise FimError(f"Recipe '{name}' from '{origin}': 'description' must be a string")
    desktop = value.get("desktop")
    if desktop is not None and not isinstance(desktop, dict):
        raise FimError(f"Recipe '{name}' from '{origin}': 'desktop' must be an object")
    dependencies = tuple(check_name(d) for d in strings("dependencies", False))
    return Recipe(name, description, strings("packages", True), dependencies, desktop, raw)


def url_of(remote: str, dist: str, name: str) -> str:
    # One trailing slash of the remote is dropped, as FlatImage does.
    base = remote[:-1] if remote.endswith("/") else remote
    return f"{base}/{dist}/latest/{name}.json"


def cache_path(data_dir: str, dist: str, name: str) -> str:
    return os.path.join(data_dir, "recipes", dist, "latest", f"{name}.json")


def download(url: str, timeout: float) -> bytes:
    """The body at `url` (http or https), or one FimError naming the URL and the cause."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) checked by fim-remote
            body: bytes = response.read(MAX_RECIPE + 1)
    except urllib.error.HTTPError as e:
        raise FimError(f"Failed to download '{url}': HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FimError(f"Failed to download '{url}': {e.reason}") from None
    except (OSError, ValueError) as e:  # timeouts, resets, a bad URL
        raise FimError(f"Failed to download '{url}': {e}") from None
    if len(body) > MAX_RECIPE:
        raise FimError(f"Failed to download '{url}': larger than {MAX_RECIPE} bytes")
    return body


def resolve(wanted: Sequence[str], get: Callable[[str], Recipe]) -> Dict[str, Recipe]:
    """`wanted` and every recipe they depend on, recursively, by name; a cycle is an
    error (a recipe reached twice by different paths is not one)."""
    found: Dict[str, Recipe] = {}
    path: List[str] = []

    def visit(name: str) -> None:
        if name in path:
            raise FimError(f"Cyclic dependency for recipe '{name}' "
                           f"({' -> '.join(path[path.index(name):] + [name])})")
        if name in found:
            return
        path.append(name)
        recipe = get(name)
        for dependency in recipe.dependencies:
            visit(dependency)
        path.pop()
        found[name] = recipe

    for name in wanted:
        visit(name)
    return found


def install_order(wanted: Sequence[str], recipes: Mapping[str, Recipe]) -> List[str]:
    """The packages of `wanted` and their dependencies, dependencies first, each once."""
    packages: List[str] = []
    done: List[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        done.append(name)
        for dependency in recipes[name].dependencies:
            visit(dependency)
        for package in recipes[name].packages:
            if package not in packages:
                packages.append(package)

    for name in wanted:
        visit(name)
    return packages


def store(data_dir: str, dist: str, recipes: Mapping[str, Recipe]) -> None:
    """Write fetched recipes into the cache, each file atomically."""
    from fim.runtime import files

    for name, recipe in recipes.items():
        target = cache_path(data_dir, dist, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = files.beside(target)
        try:
            with open(tmp, "wb") as f:
                f.write(recipe.raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            files.discard(tmp)


def cached(data_dir: str, dist: str, name: str) -> Optional[Recipe]:
    path = cache_path(data_dir, dist, name)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FimError(f"Could not open recipe file '{path}': {e.strerror}") from None
    return parse(name, raw, path)


def info_lines(recipe: Recipe, location: str) -> List[str]:
    """What `fim-recipe info` prints, in FlatImage's layout."""
    lines = [f"Recipe: {recipe.name}", f"Location: {location}"]
    if recipe.description is not None:
        lines.append(f"Description: {recipe.description}")
    lines.append(f"Dependencies: {len(recipe.dependencies)}")
    lines += [f"  - {d}" for d in recipe.dependencies]
    lines.append(f"Package count: {len(recipe.packages)}")
    if recipe.packages:
        lines.append("Packages:")
        lines += [f"  - {p}" for p in recipe.packages]
    return lines

"""fim-recipe fetch | info | install NAME[,NAME...]: package sets from the image's remote."""

from __future__ import annotations

import os
import sys

from fim.runtime import recipes
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image import settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

# How each distribution installs packages, as root inside the image: one command, the
# packages appended (FlatImage: apk and pacman). Debian's lists must be fetched first,
# in the same run (an instance runs once per process): a fixed script, the packages
# as its arguments, never spliced into its text.
MANAGERS: Dict[str, List[str]] = {
    "debian": ["sh", "-c", 'apt-get update && exec apt-get install -y "$@"', "apt-get"],
    "ubuntu": ["sh", "-c", 'apt-get update && exec apt-get install -y "$@"', "apt-get"],
    "alpine": ["apk", "add", "--no-cache", "--update-cache", "--no-progress"],
    "arch": ["pacman", "-Syu", "--noconfirm", "--needed"],
}


def distribution(ctx: Context) -> str:
    """The image's distribution in lower case, as recipe paths name it (build.json)."""
    import json

    try:
        with open(os.path.join(ctx.paths.dir_runtime, "build.json"), encoding="utf-8") as f:
            dist = json.load(f).get("dist")
    except (OSError, ValueError, AttributeError):
        dist = None
    return str(dist).lower() if dist else "unknown"


def _timeout(ctx: Context) -> float:
    text = ctx.environ.get("FIM_RECIPE_TIMEOUT", "")
    try:
        value = float(text) if text else recipes.DEFAULT_TIMEOUT
    except ValueError:
        value = -1
    if not 0 < value <= 3600:
        raise FimError(f"FIM_RECIPE_TIMEOUT must be a number of seconds (0-3600], not '{text}'")
    return value


def _progress(line: str) -> None:
    # On a terminal the user sees what is fetched; scripts get only the result.
    if sys.stderr.isatty():
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _remote(ctx: Context) -> str:
    url = ctx.image.read(settings.REMOTE)
    if not url:
        raise FimError("No remote URL configured (fim-remote set URL)")
    return str(url)


def fetch(ctx: Context, wanted: List[str], use_cache: bool) -> Dict[str, recipes.Recipe]:
    """The recipes and their dependencies; downloaded ones stored in the cache only when
    all of them came and were valid."""
    dist = distribution(ctx)
    remote: Optional[str] = None
    timeout = _timeout(ctx)
    fresh: Dict[str, recipes.Recipe] = {}

    def get(name: str) -> recipes.Recipe:
        nonlocal remote
        if use_cache:
            found = recipes.cached(ctx.paths.dir_data, dist, name)
            if found is not None:
                return found
        remote = remote or _remote(ctx)
        url = recipes.url_of(remote, dist, name)
        _progress(f"Downloading recipe from '{url}'")
        recipe = recipes.parse(name, recipes.download(url, timeout), url)
        fresh[name] = recipe
        return recipe

    found = recipes.resolve(wanted, get)
    if fresh:
        recipes.store(ctx.paths.dir_data, dist, fresh)
    return found


def _install(ctx: Context, wanted: List[str]) -> int:
    from fim.runtime import config, container
    from fim.runtime.image.settings import PERMISSIONS

    dist = distribution(ctx)
    manager = MANAGERS.get(dist)
    if manager is None:
        raise FimError(f"Unsupported distribution '{dist}' for recipe installation")
    found = fetch(ctx, wanted, use_cache=True)
    packages = recipes.install_order(wanted, found)
    cfg = config.resolve(ctx.image, ctx.paths, ctx.environ)
    if not PERMISSIONS.has(cfg.permissions, "network"):
        raise FimError("Installing recipes needs the 'network' permission "
                       "(fim-perms add network)")
    # Desktop data checked and its icon fetched before anything is installed: bad data
    # refuses the whole install, and after an instance has run, this process can start
    # no thread or process (its PID namespace's init is gone).
    desktop = _desktop_of(ctx, [found[n] for n in found if found[n].desktop is not None])
    _progress(f"Installing {' '.join(packages)}")
    code = container.run(cfg, manager + packages, True, ctx.environ)
    if code != 0:
        raise FimError(f"The package manager failed with exit code {code}", code)
    if desktop is not None:
        name, prepared = desktop
        ctx.image.write(settings.ICON, prepared.icon)
        ctx.image.write(settings.DESKTOP, prepared.desktop)
        _progress(f"Desktop integration of recipe '{name}' stored "
                  "(fim-desktop enable to install it)")
    return 0


def _desktop_of(ctx: Context, with_desktop: List[recipes.Recipe]) -> Optional[Tuple[str, Any]]:
    """The desktop data of the recipes, as fim-desktop setup takes it (the last in
    dependency order wins: the recipe asked for, after what it needs), checked. Its
    JSON is written beside the cached recipe, so a relative icon path names a file
    there; an icon is usually a URL."""
    if not with_desktop:
        return None
    import json

    from fim.runtime.desktop import setup

    recipe = with_desktop[-1]
    path = recipes.cache_path(ctx.paths.dir_data, distribution(ctx), recipe.name)
    path = path[:-len(".json")] + ".desktop.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(recipe.desktop, f)
    ctx.image.check_writable()
    return recipe.name, setup.load(path)


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-recipe' (<fetch|info|install>)")
    op, rest = args[0], args[1:]
    if op not in ("fetch", "info", "install"):
        raise FimError("Invalid recipe operation")
    if not rest:
        raise FimError("Missing recipe for operation")
    wanted = recipes.names(rest[0])
    if len(rest) > 1:
        raise trailing("fim-recipe", rest[1:])
    if op == "fetch":
        for name in fetch(ctx, wanted, use_cache=False):
            print(f"Fetched recipe '{name}'")
        return 0
    if op == "info":
        dist = distribution(ctx)
        for name in wanted:
            recipe = recipes.cached(ctx.paths.dir_data, dist, name)
            if recipe is None:
                raise FimError(f"Recipe '{name}' not found locally. "
                               f"Use 'fim-recipe fetch {name}' first.")
            location = recipes.cache_path(ctx.paths.dir_data, dist, name)
            print("\n".join(recipes.info_lines(recipe, location)))
        return 0
    return _install(ctx, wanted)

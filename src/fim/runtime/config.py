"""Resolve what a container command needs: environment > reserved space > defaults.

Everything downstream (mounts, sandbox) receives this frozen value and reads
nothing else from the environment or the image.
"""

from __future__ import annotations

import os

from fim.runtime import hostcheck, overlays
from fim.runtime.errors import FimError, debug_enabled, warn
from fim.runtime.image import settings
from fim.runtime.layers import Layer, detect, external
from fim.runtime.record import dataclass, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional, Tuple

    from fim.runtime.hostcheck import Evidence
    from fim.runtime.image.file import ImageFile
    from fim.runtime.paths import Paths


DEFAULT_EXIT_GRACE = 5.0
# Seconds a keeper holds an image's mounts after its last instance ends (keeper/).
DEFAULT_KEEP = 60.0


@dataclass(frozen=True)
class Config:
    paths: Paths
    backend: overlays.Backend  # the one that runs
    chosen: overlays.Backend  # the one FIM_OVERLAY or the image asked for
    casefold: bool
    debug: bool
    layers: Tuple[Layer, ...]
    torn_bytes: int  # of an incomplete last chain element, 0 when none
    uid: int
    gid: int
    permissions: int
    unshare: int
    environment: Tuple[str, ...]  # fim-env entries, K=V, unexpanded
    bindings: Tuple[settings.Binding, ...]
    problems: Tuple[str, ...]  # damaged settings that fell back to their defaults
    exit_grace: float = DEFAULT_EXIT_GRACE  # for the program's helpers at exit (reaper.py)
    keep: float = 0.0  # FIM_KEEP: seconds a keeper outlives the last instance, 0 for none
    fallback: str = ""  # FIM_FALLBACK: how to run where namespaces are refused, "" for not
    # What the host says about namespaces (hostcheck.py), read here, before any is made.
    host: Optional[Evidence] = None

    @property
    def casefold_fallback(self) -> bool:
        """Casefold turned the chosen backend into another."""
        return self.backend is not self.chosen


def layer_list(image: ImageFile, paths: Paths,
               environ: Mapping[str, str]) -> Tuple[List[Layer], int]:
    """Every layer in mount order: embedded, managed (`layers/`), then FIM_LAYERS; and
    the bytes of an incomplete last chain element."""
    scanned = image.chain()
    layers = [Layer(e.index, image.path, e.offset, e.size, True) for e in scanned.elements]
    if os.path.isdir(paths.dir_layers):
        layers += external([paths.dir_layers], len(layers))
    layers += _requested(environ.get("FIM_LAYERS", ""), len(layers))
    return layers, scanned.torn or 0


def _requested(value: str, first_index: int) -> List[Layer]:
    """FIM_LAYERS' layers (files, and the files of directories); an entry that does not
    exist, or a file that is no layer, is one W:: line and the run goes on without it
    (FlatImage's behaviour: a layer set from a script outlives the file it names)."""
    found: List[Layer] = []
    for entry in (p for p in value.split(":") if p):
        if not os.path.exists(entry):
            warn(f"Ignoring '{entry}' of FIM_LAYERS: it does not exist")
            continue
        for layer in external([entry], 0):
            if detect(layer.path) is None:
                warn(f"Ignoring '{layer.path}' of FIM_LAYERS: it is not a layer "
                     "(SquashFS or DwarFS)")
                continue
            found.append(replace(layer, index=first_index + len(found)))
    return found


def _seconds(environ: Mapping[str, str], name: str, default: float, most: float) -> float:
    text = environ.get(name, "")
    if text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        raise FimError(f"{name} must be a number of seconds from 0 to {most:.0f}, not '{text}'")
    return value


def exit_grace(environ: Mapping[str, str]) -> float:
    """FIM_EXIT_GRACE: seconds the processes a program leaves get after it ends, between
    SIGTERM and SIGKILL (reaper.py); 0 turns the wait off."""
    return _seconds(environ, "FIM_EXIT_GRACE", DEFAULT_EXIT_GRACE, 3600)


def keep(environ: Mapping[str, str]) -> float:
    """FIM_KEEP: seconds the image's mounts are kept after its last instance ends, for
    the next launch to reuse (keeper/); 0 turns the keeper off."""
    return _seconds(environ, "FIM_KEEP", DEFAULT_KEEP, 86400)


# FIM_FALLBACK values: what runs the program where the host refuses namespaces
# (fallback/); the empty value refuses to run instead.
FALLBACKS = ("proot",)


def fallback(environ: Mapping[str, str]) -> str:
    """FIM_FALLBACK: "" (the default: a host that refuses namespaces gets the diagnosis)
    or "proot" (run the program without namespaces, with weaker isolation)."""
    text = environ.get("FIM_FALLBACK", "")
    if text in ("",) + FALLBACKS:
        return text
    raise FimError(f"FIM_FALLBACK must be empty or one of {','.join(FALLBACKS)}, not '{text}'")


def resolve(image: ImageFile, paths: Paths, environ: Mapping[str, str]) -> Config:
    problems: List[str] = []
    casefold = image.read_or(settings.CASEFOLD, problems) != 0
    chosen = overlays.choose(environ, image.read_or(settings.OVERLAY, problems))
    layers, torn = layer_list(image, paths, environ)
    if not layers:
        raise FimError(f"'{image.path}' has no layers")
    return Config(
        paths=paths,
        backend=overlays.effective(chosen, casefold),
        chosen=chosen,
        casefold=casefold,
        debug=debug_enabled(environ),
        layers=tuple(layers),
        torn_bytes=torn,
        uid=os.getuid(),
        gid=os.getgid(),
        permissions=image.read_or(settings.PERMISSIONS, problems),
        unshare=image.read_or(settings.UNSHARE, problems),
        environment=tuple(image.read_or(settings.ENVIRONMENT, problems)),
        bindings=tuple(image.read_or(settings.BINDINGS, problems)),
        problems=tuple(problems),
        exit_grace=exit_grace(environ),
        keep=keep(environ),
        fallback=fallback(environ),
        host=hostcheck.evidence(),
    )

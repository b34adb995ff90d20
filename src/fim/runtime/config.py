"""Resolve what a container command needs: environment > reserved space > defaults.

Everything downstream (mounts, sandbox) receives this frozen value and reads
nothing else from the environment or the image.
"""

from __future__ import annotations

import os

from fim.runtime import overlays
from fim.runtime.errors import FimError, debug_enabled
from fim.runtime.image import settings
from fim.runtime.layers import Layer, external
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Tuple

    from fim.runtime.image.file import ImageFile
    from fim.runtime.paths import Paths


DEFAULT_EXIT_GRACE = 5.0


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
    extra = [p for p in environ.get("FIM_LAYERS", "").split(":") if p]
    layers += external(extra, len(layers))
    return layers, scanned.torn or 0


def exit_grace(environ: Mapping[str, str]) -> float:
    """FIM_EXIT_GRACE: seconds the processes a program leaves get after it ends, between
    SIGTERM and SIGKILL (reaper.py); 0 turns the wait off."""
    text = environ.get("FIM_EXIT_GRACE", "")
    if text == "":
        return DEFAULT_EXIT_GRACE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise FimError(f"FIM_EXIT_GRACE must be a number of seconds from 0 to 3600, not "
                       f"'{text}'")
    return value


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
    )

"""Resolve what a container command needs: environment > reserved space > defaults.

Everything downstream (mounts, sandbox) receives this frozen value and reads
nothing else from the environment or the image.
"""

from __future__ import annotations

import os

from fim.runtime import instance, overlays, settings
from fim.runtime.errors import FimError, debug_enabled
from fim.runtime.image import chain
from fim.runtime.image.header import Header
from fim.runtime.image.reserved import REGIONS, read_span
from fim.runtime.layers import Layer, external
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Tuple


@dataclass(frozen=True)
class Config:
    paths: instance.Paths
    header: Header
    overlay: str
    casefold: bool
    casefold_fallback: bool  # casefold turned BWRAP into UNIONFS
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


def stored_flags(head: bytes) -> Tuple[int, bool]:
    """Overlay byte and casefold flag from the first 11 bytes of the reserved space."""
    return head[REGIONS["overlay"].offset], head[REGIONS["casefold"].offset] != 0


def layer_list(fd: int, header: Header, paths: instance.Paths,
               environ: Mapping[str, str]) -> Tuple[List[Layer], int]:
    """Every layer in mount order: embedded, managed (`layers/`), then FIM_LAYERS."""
    scanned = chain.scan(fd, header)
    layers = [
        Layer(e.index, paths.image, e.offset, e.size, True) for e in scanned.elements
    ]
    if os.path.isdir(paths.dir_layers):
        layers += external([paths.dir_layers], len(layers))
    extra = [p for p in environ.get("FIM_LAYERS", "").split(":") if p]
    layers += external(extra, len(layers))
    return layers, scanned.torn or 0


def resolve(image: str, header: Header, dir_global: str,
            environ: Mapping[str, str]) -> Config:
    paths = instance.paths(image, dir_global, header.build_id, os.getpid())
    try:
        fd = os.open(image, os.O_RDONLY)
    except OSError as e:
        raise FimError(f"Cannot read image '{image}': {e.strerror}") from None
    try:
        head = read_span(fd, header, 0, 11)
        overlay_byte, casefold = stored_flags(head)
        unshare = int.from_bytes(
            read_span(fd, header, REGIONS["unshare"].offset, REGIONS["unshare"].size), "little")
        layers, torn = layer_list(fd, header, paths, environ)
    finally:
        os.close(fd)
    problems: List[str] = []
    no_entries: List[str] = []
    no_bindings: List[settings.Binding] = []
    environment = settings.or_default(
        lambda: settings.read_environment(image, header), no_entries, problems)
    bindings = settings.or_default(
        lambda: settings.read_bindings(image, header), no_bindings, problems)
    if not layers:
        raise FimError(f"'{image}' has no layers")
    overlay = overlays.choose(environ, overlay_byte)
    # Kernel overlayfs cannot sit under the case-insensitive view.
    fallback = casefold and overlay == overlays.BWRAP
    return Config(
        paths=paths,
        header=header,
        overlay=overlays.UNIONFS if fallback else overlay,
        casefold=casefold,
        casefold_fallback=fallback,
        debug=debug_enabled(environ),
        layers=tuple(layers),
        torn_bytes=torn,
        uid=os.getuid(),
        gid=os.getgid(),
        permissions=int.from_bytes(head[0:8], "little"),
        unshare=unshare,
        environment=tuple(environment),
        bindings=tuple(bindings),
        problems=tuple(problems),
    )

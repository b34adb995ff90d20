"""Layer formats behind one interface: detect by magic, mount read-only, create.

A format module provides MAGIC, TOOL (the mount tool), CREATE_TOOL, mount_argv()
and create_argv(). Adding a format is adding a module and a line to FORMATS.
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import List, Mapping, Optional


@dataclass(frozen=True)
class Layer:
    """One read-only layer: bytes [offset, offset+size) of a file."""

    index: int
    path: str
    offset: int
    size: int
    embedded: bool


# Format name -> (magic at a layer's first bytes, module under fim.runtime.layers). The
# magic is repeated here so that finding a layer's format imports only its module.
FORMATS = {"squashfs": (b"hsqs", "squashfs"), "dwarfs": (b"DWARFS", "dwarfs")}


def detect(path: str, offset: int = 0) -> Optional[str]:
    """The name of the layer format at `offset` of `path`, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.pread(fd, 8, offset)
    except OSError:
        return None
    finally:
        os.close(fd)
    for name, (magic, _) in FORMATS.items():
        if head.startswith(magic):
            return name
    return None


def module_of(name: str) -> ModuleType:
    return __import__(f"fim.runtime.layers.{FORMATS[name][1]}", fromlist=["MAGIC"])


def format_module(layer: Layer) -> ModuleType:
    name = detect(layer.path, layer.offset)
    if name is None:
        raise FimError(
            f"Layer {layer.index} in '{layer.path}' (offset {layer.offset}) is not a known "
            "layer format (SquashFS, DwarFS)"
        )
    return module_of(name)


def external(paths: List[str], first_index: int) -> List[Layer]:
    """Layers from files, and from directories (their files in alphabetical order)."""
    layers: List[Layer] = []
    for path in paths:
        if os.path.isdir(path):
            files = [os.path.join(path, n) for n in sorted(os.listdir(path))]
            files = [f for f in files if os.path.isfile(f)]
        elif os.path.isfile(path):
            files = [path]
        else:
            raise FimError(f"Layer '{path}' does not exist")
        for f in files:
            path_abs = os.path.abspath(f)
            layers.append(
                Layer(first_index + len(layers), path_abs, 0, os.path.getsize(path_abs), False)
            )
    return layers


DEFAULT_LEVEL = 7


def compression_level(environ: Mapping[str, str]) -> int:
    """FIM_COMPRESSION_LEVEL, 0-9 (default 7)."""
    raw = environ.get("FIM_COMPRESSION_LEVEL", "")
    if raw == "":
        return DEFAULT_LEVEL
    if not raw.isdigit() or int(raw) > 9:
        raise FimError(f"FIM_COMPRESSION_LEVEL must be a number from 0 to 9, not '{raw}'")
    return int(raw)

"""Layers checked against their digests before anything is mounted, once per change.

A layer's bytes are hashed on the first run after its file changed (an image is
rewritten by every commit, add and setting; a managed or external layer file when
it is replaced); the outcome is cached by the file's identity (device, inode,
size, mtime, ctime) and the layer's place in it, so that an unchanged image pays
one stat and one small read per layer file. The cache lives with the build's
runtime (`{global}/app/{BUILD_ID}/verified/`), one small file per layer file.
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.image import digest
from fim.runtime.layers import FORMATS, module_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Sequence, Set, Tuple

    from fim.runtime.layers import Layer
    from fim.runtime.paths import Paths

# States of a layer besides digest.OK / DAMAGED / NONE.
NOT_A_LAYER = "not a layer"
TOO_SHORT = "cut short"  # its filesystem runs past the layer
_WHY = {digest.DAMAGED: "its digest does not match",
        TOO_SHORT: "its filesystem runs past the end of the layer"}
_HEAD = 96  # enough for any format's superblock fields (squashfs.HEAD)

PASSING = (digest.OK, digest.NONE)


def _identity(st: os.stat_result) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def _cache_file(paths: Paths, st: os.stat_result) -> str:
    return os.path.join(paths.dir_app, "verified", f"{st.st_dev:x}-{st.st_ino:x}")


def _cached(path: str, identity: str) -> Set[str]:
    """The layers of the file of `identity` that passed, as "offset size" words."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    if not lines or lines[0] != identity:
        return set()
    return set(lines[1:])


def _remember(path: str, identity: str, passed: Set[str]) -> None:
    """Write the cache file atomically (a reader sees the old one or the new one). A
    cache that cannot be written only costs the next run the same check."""
    tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            f.write("\n".join([identity] + sorted(passed)) + "\n")
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _format(head: bytes) -> str:
    for name, (magic, _) in FORMATS.items():
        if head.startswith(magic):
            return name
    return ""


def state(fd: int, offset: int, size: int) -> str:
    """What the layer at [offset, offset+size) of `fd` is: digest.OK, DAMAGED or NONE,
    NOT_A_LAYER (no known magic), TOO_SHORT (its superblock claims more bytes than
    the layer holds: a layer without a digest cut short)."""
    head = os.pread(fd, min(_HEAD, size), offset)
    name = _format(head)
    if not name:
        return NOT_A_LAYER
    found = digest.check(fd, offset, size)
    if found != digest.NONE:
        return found
    claimed = module_of(name).fs_size(head)
    if claimed is not None and claimed > size:
        return TOO_SHORT
    return digest.NONE


def describe(found: str) -> str:
    """A state as `fim-layer verify` prints it."""
    return f"damaged ({_WHY[found]})" if found in _WHY else found


def _what(layer: Layer) -> str:
    return f"Layer {layer.index} of '{layer.path}'"


def _refuse(layer: Layer, found: str) -> FimError:
    if found == NOT_A_LAYER:
        return FimError(f"{_what(layer)} (offset {layer.offset}) is not a known layer format "
                        "(SquashFS, DwarFS); nothing was mounted", 1)
    return FimError(f"{_what(layer)} is damaged ({_WHY[found]}); nothing was mounted "
                    "(fim-layer verify checks every layer)", 1)


def _by_file(layers: Sequence[Layer]) -> Dict[str, List[Layer]]:
    groups: Dict[str, List[Layer]] = {}
    for layer in layers:
        groups.setdefault(layer.path, []).append(layer)
    return groups


def before_mount(layers: Sequence[Layer], paths: Paths) -> None:
    """FimError for the first layer that is damaged or no layer at all; layers that
    passed before in an unchanged file are not read again."""
    for path, group in _by_file(layers).items():
        try:
            st = os.stat(path)
        except OSError as e:
            raise FimError(f"Cannot read layer '{path}': {e.strerror}", 1) from None
        identity = _identity(st)
        cache = _cache_file(paths, st)
        passed = _cached(cache, identity)
        todo = [layer for layer in group if f"{layer.offset} {layer.size}" not in passed]
        if not todo:
            continue
        results = _check_file(path, todo)
        for layer, found in results:
            if found not in PASSING:
                raise _refuse(layer, found)
        _record(cache, path, identity, passed, results)


def _check_file(path: str, layers: Sequence[Layer]) -> List[Tuple[Layer, str]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise FimError(f"Cannot read layer '{path}': {e.strerror}", 1) from None
    try:
        return [(layer, _state_of(fd, layer)) for layer in layers]
    finally:
        os.close(fd)


def _state_of(fd: int, layer: Layer) -> str:
    try:
        return state(fd, layer.offset, layer.size)
    except OSError as e:
        # EIO under the layer is damage the user must hear of, not a traceback.
        raise FimError(f"Cannot read layer {layer.index} of '{layer.path}': {e.strerror}; "
                       "nothing was mounted", 1) from None


def _record(cache: str, path: str, identity: str, passed: Set[str],
            results: Sequence[Tuple[Layer, str]]) -> None:
    """Remember what passed, if the file is still the one that was read: one changed
    while it was hashed is checked again next time."""
    try:
        if _identity(os.stat(path)) != identity:
            return
    except OSError:
        return
    done = {f"{layer.offset} {layer.size}" for layer, found in results if found in PASSING}
    _remember(cache, identity, passed | done)


def report(layers: Sequence[Layer], paths: Paths) -> List[Tuple[Layer, str]]:
    """Every layer's state, read now whatever the cache says (fim-layer verify); what
    passed is remembered for the runs that follow."""
    out: List[Tuple[Layer, str]] = []
    for path, group in _by_file(layers).items():
        try:
            st = os.stat(path)
        except OSError as e:
            raise FimError(f"Cannot read layer '{path}': {e.strerror}", 1) from None
        results = _check_file(path, group)
        out += results
        identity = _identity(st)
        _record(_cache_file(paths, st), path, identity, set(), results)
    return sorted(out, key=lambda pair: pair[0].index)

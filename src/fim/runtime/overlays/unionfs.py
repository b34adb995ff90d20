"""The UNIONFS backend: unionfs-fuse in copy-on-write mode, mounted before bubblewrap.

unionfs-fuse does not read the deletion markers layers carry (0/0 devices and
opaque xattrs, see whiteouts.py): it would show the devices as files and let
lower layers shine through opaque directories. So each layer that has markers
gets two small generated read-only branches: one just above it, hiding its
deleted paths (the devices included), and one just below it, hiding the
directories it made opaque in the layers underneath. The scan of a layer is
cached per layer (by its content) under the runtime directory.
"""

from __future__ import annotations

import os
import zlib

from fim.runtime import files, mounts, tools
from fim.runtime.overlays import UNIONFS, Root, alternatives, whiteouts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

    from fim.runtime.layers import Layer
    from fim.runtime.overlays import RootSpec
    from fim.runtime.unwind import Stack

TOOL = "unionfs"


# For a root every instance shares (the keeper's): the kernel keeps entries, misses,
# attributes and file data for a day instead of libfuse's second (entries and
# attributes) and none (misses, data), so a relaunch seconds later does not ask the
# daemon for each again. Every change goes through this one mount, which keeps
# those caches right; auto_cache still drops a file's data at open when the daemon
# sees it changed underneath. A root of its own keeps libfuse's defaults: another
# instance's root on the same upper dir may change it, and it would go unseen.
SHARED = "entry_timeout=86400,attr_timeout=86400,negative_timeout=86400,auto_cache"


def mount_argv(tool: Sequence[str], branches_top_first: Sequence[str], upper: str,
               mountpoint: str, shared: bool = False) -> List[str]:
    branches = [f"{upper}=RW"] + [f"{b}=RO" for b in branches_top_first]
    # hide_meta_files: its .unionfs-fuse bookkeeping never shows in the container.
    options = "cow,hide_meta_files" + (f",{SHARED}" if shared else "")
    return [*tool, "-o", options, ":".join(branches), mountpoint]


def cache_key(layer: Layer) -> str:
    """Names a layer by its content: copies of one image share a runtime directory, and a
    layer at the same place in two of them may differ. The SquashFS superblock (times,
    counts, table offsets) and the tables at the end identify it."""
    fd = os.open(layer.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 96, layer.offset)
        tail = os.pread(fd, min(65536, layer.size), layer.offset + max(0, layer.size - 65536))
    finally:
        os.close(fd)
    return f"{layer.size}:{zlib.crc32(head):08x}:{zlib.crc32(tail):08x}"


def _markers(key: str, layer_dir: str, cache_dir: str) -> Tuple[List[str], List[str]]:
    cache = os.path.join(cache_dir, f"{zlib.crc32(key.encode()):08x}.markers")
    try:
        with open(cache, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines[0] == key:
            gone = [ln[2:] for ln in lines[1:] if ln.startswith("w ")]
            opaque = [ln[2:] for ln in lines[1:] if ln.startswith("o ")]
            return gone, opaque
    except OSError:
        pass
    gone, opaque = whiteouts.scan(layer_dir)
    # Simultaneous first starts build it at once: each writes its own file (their
    # inits are all process 1, so the pid cannot name it) and the last rename wins.
    tmp = files.beside(cache)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join([key] + [f"w {p}" for p in gone] + [f"o {p}" for p in opaque]))
        os.replace(tmp, cache)
    except OSError:
        files.discard(tmp)  # only a cache: the scan stands for this run
    return gone, opaque


def branches(layers_top_first: Sequence[Tuple[str, str]], cache_dir: str,
             work_dir: str) -> List[str]:
    """Read-only branches, top first: each layer with its generated marker branches.

    `layers_top_first` holds (cache key, mounted layer dir) pairs."""
    result: List[str] = []
    for n, (key, layer_dir) in enumerate(layers_top_first):
        gone, opaque = _markers(key, layer_dir, cache_dir)
        if gone:
            result.append(whiteouts.unionfs_branch(os.path.join(work_dir, f"{n}-above"), gone))
        result.append(layer_dir)
        if opaque:
            result.append(whiteouts.unionfs_branch(os.path.join(work_dir, f"{n}-below"), opaque))
    return result


def build(stack: Stack, spec: RootSpec, shared: bool = False) -> Root:
    tool = tools.require(spec.runtime, TOOL, spec.environ, f"for the {UNIONFS.name} overlay",
                         alternatives(UNIONFS))
    keys = [cache_key(layer) for layer in reversed(spec.layers)]
    ro = branches(list(zip(keys, spec.lowers)), spec.cache, os.path.join(spec.scratch, "unionfs"))
    argv = mount_argv(tool, ro, spec.upper, spec.mountpoint, shared)
    merged = mounts.fuse(stack, argv, spec.environ, f"{spec.logs}/{TOOL}.log", spec.mountpoint,
                         f"the {UNIONFS.name} overlay")
    return Root(["--bind", merged, "/"], [merged], merged)


def keep(stack: Stack, spec: RootSpec) -> Optional[Root]:
    return build(stack, spec, shared=True)


def fits(spec: RootSpec) -> bool:
    return True


def refused(spec: RootSpec) -> bool:
    return False

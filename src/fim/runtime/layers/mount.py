"""Mount every layer read-only, all at once, each pushed on the unwind stack."""

from __future__ import annotations

import os

from fim.runtime import mounts, process, tools
from fim.runtime.errors import FimError, debug
from fim.runtime.layers import format_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Sequence, Tuple

    from fim.runtime.layers import Layer
    from fim.runtime.paths import Paths
    from fim.runtime.unwind import Stack


def _tool(runtime_dir: str, names: Sequence[str],
          environ: Mapping[str, str]) -> Tuple[str, List[str]]:
    """The first of a format's tools (in order of preference) the image or host has."""
    for name in names:
        found = tools.find(runtime_dir, name, environ)
        if found is not None:
            return name, found
    return names[0], tools.require(runtime_dir, names[0], environ, "to mount layers")


def mount_all(stack: Stack, layers: Sequence[Layer], paths: Paths,
              environ: Mapping[str, str], verbose: bool) -> List[str]:
    """The mount points of `layers`, newest first. Every layer's format and tool are
    known before the first tool starts; the tools then start together (each mount
    takes a few milliseconds of its own), and every one that started is waited for,
    and its mount on `stack`, before any failure is reported: a tool left running
    would mount after the unwind, and its mount would outlive its daemon (killed
    with the instance's PID namespace) as a dead FUSE mount ("Transport endpoint is
    not connected" to whoever removes the instance's directories)."""
    planned: List[Tuple[Layer, List[str], str, str]] = []
    for layer in layers:
        module = format_module(layer)
        name, tool = _tool(paths.dir_runtime, module.TOOLS, environ)
        point = paths.layer_mountpoint(layer.index)
        planned.append((layer, module.mount_argv(tool, layer.path, layer.offset, point),
                        point, paths.log(name)))
    started: List[Tuple[Layer, str, int, str]] = []
    failed: List[Tuple[Layer, str]] = []
    try:
        for layer, argv, point, log in planned:
            os.makedirs(point, exist_ok=True)
            debug(verbose, f"Mounting layer from '{layer.path}' with offset '{layer.offset}'")
            started.append((layer, point, process.spawn(argv, environ, log), log))
    finally:
        for layer, point, pid, log in started:
            if process.wait(pid) == 0:
                mounts.made(stack, point)
            else:
                failed.append((layer, log))
    if failed:
        layer, log = failed[0]
        raise FimError(f"Could not mount layer {layer.index} of '{layer.path}' (see {log})", 1)
    return [point for _, point, _, _ in reversed(started)]

"""Make a layer file from a directory, and place finished layers durably."""

from __future__ import annotations

import os

from fim.runtime import tools
from fim.runtime.errors import FimError
from fim.runtime.layers import squashfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

MAX_MANAGED = 999


def create(source: str, output: str, level: int, runtime_dir: str,
           environ: Mapping[str, str], log: str) -> None:
    """SquashFS (zstd) of `source` at `output`, fsynced. Deletion markers (0/0 devices,
    opaque xattrs), links, modes, owners and xattrs are kept as they are."""
    tool = tools.require(runtime_dir, squashfs.CREATE_TOOL, environ, "to create layers")
    argv = squashfs.create_argv(tool, source, output, level)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(argv[0], argv, dict(environ), file_actions=actions)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                last = [ln for ln in f.read().splitlines() if ln.strip()][-1:]
        except OSError:
            last = []
        detail = f": {last[0]}" if last else ""
        raise FimError(f"Could not create the layer{detail} (log: {log})", 1)
    fsync_path(output)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(temporary: str, destination: str) -> None:
    """Give a finished layer its final name, never replacing an existing file."""
    os.link(temporary, destination)  # fails with FileExistsError instead of replacing
    os.unlink(temporary)
    fsync_path(os.path.dirname(os.path.abspath(destination)))


def managed_number(name: str) -> int:
    """N of `layer-NNN.layer`, -1 for any other name."""
    if len(name) == 15 and name.startswith("layer-") and name.endswith(".layer"):
        digits = name[6:9]
        if digits.isdigit():
            return int(digits)
    return -1


def next_managed(layers_dir: str) -> str:
    """The path of the next managed layer: one more than the highest existing, from 000."""
    try:
        names = os.listdir(layers_dir)
    except FileNotFoundError:
        names = []
    number = max([managed_number(n) for n in names] + [-1]) + 1
    if number > MAX_MANAGED:
        raise FimError("Maximum number of layers exceeded")
    return os.path.join(layers_dir, f"layer-{number:03d}.layer")


def clear(upper: str) -> int:
    """Remove everything in the upper dir; warn about what cannot go. Failures count."""
    failures = 0
    try:
        entries = list(os.scandir(upper))
    except FileNotFoundError:
        return 0
    for entry in entries:
        failures += _remove(entry.path, entry.is_dir(follow_symlinks=False))
    return failures


def _remove(path: str, is_dir: bool) -> int:
    from fim.runtime.errors import warn

    if not is_dir:
        try:
            os.unlink(path)
            return 0
        except OSError:
            warn(f"Could not remove file {path}")
            return 1
    failures = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        failures += _remove(entry.path, entry.is_dir(follow_symlinks=False))
    try:
        os.rmdir(path)
    except OSError:
        warn(f"Could not remove directory {path}")
        failures += 1
    return failures

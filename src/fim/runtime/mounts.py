"""Mount lifetimes: a mount made by a FUSE tool or by mount(2) is pushed on the
instance's unwind stack the moment it exists, and detached when it unwinds."""

from __future__ import annotations

import os
from errno import EINVAL, ENOENT

from fim.runtime import libc, process
from fim.runtime.errors import FimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Sequence

    from fim.runtime.unwind import Stack


def detach(point: str) -> None:
    """Detach the mount at `point`; one that is already gone is not an error."""
    try:
        libc.detach(point)
    except OSError as e:
        if e.errno not in (EINVAL, ENOENT):
            raise


def made(stack: Stack, point: str) -> str:
    """`point` now holds a mount of ours: detach it when `stack` unwinds."""
    stack.push(detach, point)
    return point


def fuse(stack: Stack, argv: Sequence[str], environ: Mapping[str, str], log: str,
         point: str, what: str) -> str:
    """Run a FUSE tool that returns once its mount is in place (its daemon stays
    behind and exits when the mount is detached); the mount point."""
    os.makedirs(point, exist_ok=True)
    if process.run(argv, environ, log) != 0:
        raise FimError(f"Could not mount {what} (see {log})", 1)
    return made(stack, point)

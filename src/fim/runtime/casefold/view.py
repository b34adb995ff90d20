"""The case-insensitive view of an instance's merged root, as one step of its pipeline."""

from __future__ import annotations

import os

from fim.runtime import mounts, process
from fim.runtime.errors import FimError
from fim.runtime.overlays import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fim.runtime.unwind import Stack


def stack_on(stack: Stack, root: Root, point: str) -> Root:
    """Serve `root`'s merged mount case-insensitively at `point`; the root made of it.
    The server is a fork of the instance's init (no second interpreter start) and ends
    when the view is detached."""
    if root.merged is None:
        raise FimError("The case-insensitive view needs a FUSE overlay", 1)
    os.makedirs(point, exist_ok=True)

    def serve() -> int:
        from fim.runtime.casefold import server

        return server.main([root.merged or "", point])

    if process.wait(process.fork(serve)) != 0:
        raise FimError("Could not mount the case-insensitive view", 1)
    mounts.made(stack, point)
    return Root(["--bind", point, "/"], [point], point)

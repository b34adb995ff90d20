"""The portal: `fim_portal CMD ARGS...` in the container runs CMD on the host.

Opened by the `portal` permission. The host side (host.py) is the instance's
dispatcher, forked by the launcher before it enters the instance's namespaces and
pushed on its unwind stack; the container side is a POSIX sh script (fim_portal.sh,
shipped in the runtime payload) that needs only cat, mkdir, mkfifo, rm and sleep,
because an image need not have Python or any particular C library. They meet in
the instance's portal directory, bound into the container's own /tmp (a tmpfs:
nothing lands in the upper dir) at HOST_DIR; the client is always bound at CLIENT,
its directory added to PATH, and says that the portal is closed when HOST_DIR is
not there. The protocol is in docs/runtime.md, "The portal".
"""

from __future__ import annotations

import os

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import List, Mapping

    from fim.runtime.paths import Paths
    from fim.runtime.unwind import Stack
else:
    import _signal  # the C module: `signal` imports enum

# In the container (the client script names the same directory).
CONTAINER_DIR = "/tmp/.fim-portal"
CLIENT = CONTAINER_DIR + "/fim_portal"
HOST_DIR = CONTAINER_DIR + "/host"
CLIENT_SOURCE = os.path.join(os.path.dirname(__file__), "fim_portal.sh")


@dataclass(frozen=True)
class Ends:
    client: str  # the client script on the host (the extracted runtime's)
    directory: str  # the instance's portal directory: bound only with the permission


def ends(paths: Paths) -> Ends:
    return Ends(CLIENT_SOURCE, directory(paths))


def directory(paths: Paths) -> str:
    return os.path.join(paths.dir_instance, "portal")


def start(stack: Stack, paths: Paths, host: Mapping[str, str], grace: float) -> None:
    """Make the instance's portal directory and start its dispatcher (call this on the
    host side, before the instance's namespaces), pushed on `stack`. `host`: the
    environment calls start from; `grace`: what a call still running when the
    instance ends gets between SIGTERM and SIGKILL."""
    from fim.runtime import process
    from fim.runtime.portal import host as side

    where = directory(paths)
    os.makedirs(os.path.join(where, side.CALLS), mode=0o700, exist_ok=True)
    os.chmod(where, 0o700)
    requests = os.path.join(where, side.REQUESTS)
    if not os.path.exists(requests):
        os.mkfifo(requests, 0o600)
    log = paths.log("portal")
    title = [os.path.basename(paths.image), "fim-portal"]
    launcher = os.getpid()
    pid = process.fork(lambda: _dispatcher(where, dict(host), grace, launcher, title, log))
    stack.push(_stop, pid)


def _dispatcher(where: str, host: Mapping[str, str], grace: float, launcher: int,
                title: List[str], log: str) -> int:
    """In the forked dispatcher: none of the launcher's descriptors (an inherited lock
    or pipe would be held by every call), output to the instance's log."""
    os.closerange(3, 1 << 16)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    from fim.runtime.portal import host as side

    return side.dispatch(where, host, grace, launcher, title)


def _stop(pid: int) -> None:
    """The instance has ended: the dispatcher goes, and with it (their death signal)
    every handler, which ends its call."""
    from fim.runtime import process

    process.kill([pid], _signal.SIGKILL)
    process.wait(pid)

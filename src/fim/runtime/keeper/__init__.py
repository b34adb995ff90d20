"""The keeper: an image's mounts kept alive between launches, so that a relaunch
reuses them and their caches instead of starting every FUSE daemon cold.

One keeper per image and user: a process with its own (user,) mount and PID
namespaces that mounts the layers and the writable root (the FUSE overlay with
the case-insensitive view, or the kernel overlay bubblewrap would mount for each
instance) as an instance would, then waits on a Unix
socket in the runtime's directory (`{FIM_DIR_APP}/keeper/`, the caller's own). A
launch asks it for the mounts of its *key* (`key()`: the image file's identity
and place, every layer file's identity, the backend, casefold, the ids mapped); a
keeper with the same key answers with its mounts, and the instance joins its
namespaces and makes a private copy of its mount namespace (so the instance's
own mounts stay its own). The connection stays open while the instance runs: it
is how the keeper counts its instances. A keeper with another key retires: it
takes no new instance and ends when its last one does; then a fresh keeper is
started. Once the last instance has ended, the keeper waits FIM_KEEP seconds
(default 60, 0 = no keeper) for another one and then unmounts everything and
exits.

Nothing it holds is in the host's mount table (its namespaces are its own); it
is the init of its PID namespace, its first process is its parent with a
parent-death signal, so killing either kills every daemon and drops every
mount. A lock beside the socket makes the question "is there a keeper, else
start one" one step: concurrent first launches start exactly one.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import sys
import zlib

from fim.runtime.errors import debug
from fim.runtime.overlays import Root
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional, Sequence, Tuple

    from fim.runtime.config import Config
    from fim.runtime.paths import Paths

# Requests and replies (frames of NUL-separated words, see `frame`).
USE = "use"  # + key: the mounts of that key, for one instance
RETIRE = "retire"  # take no new instance, end when the last one has
OK = "ok"
STALE = "stale"  # another key: retiring
IDLE = "idle"  # ... with no instance left: it ends now, the connection closes after
BUSY = "busy"  # ... with instances left: it ends after them

# Seconds a launch waits for an idle keeper to unmount (it answers first).
_RETIRE_WAIT = 10.0


@dataclass(frozen=True)
class Kept:
    """What an instance uses of a keeper: its namespaces' process, the ids they map,
    the layers' mount points and the root it holds (None: each instance makes its own)."""

    pid: int
    ids: str
    lowers: Tuple[str, ...]
    root: Optional[Root]
    connection: object  # held open while the instance lives


def where(paths: Paths) -> Tuple[str, str]:
    """The lock and the socket of the image's keeper. One per image file path and
    build: the name is a digest of the path (a socket path has at most 107 bytes)."""
    raw = paths.image.encode()
    name = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"
    base = os.path.join(paths.dir_app, "keeper", name)
    return base + ".lock", base + ".sock"


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _place(path: str) -> str:
    """Which directory `path` is, not what it holds: a data dir deleted and made again
    is another one (a kept overlay would write into the deleted one)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_dev}:{st.st_ino}"


def key(cfg: Config, ids: str) -> List[str]:
    """Everything the kept mounts depend on: a change in any gives a fresh keeper.
    The image's identity covers commits, adds and setting changes (which rewrite it),
    its replacement and its move; each layer file's covers `layers/` and FIM_LAYERS;
    the upper dir's covers a data dir deleted or moved."""
    words = [cfg.paths.image, _place(cfg.paths.dir_upper), cfg.backend.name,
             "casefold" if cfg.casefold else "", ids, str(cfg.uid), str(cfg.gid)]
    seen = set()
    for layer in cfg.layers:
        words.append(f"{layer.index}:{layer.offset}:{layer.size}")
        if layer.path not in seen:
            seen.add(layer.path)
            words.append(_identity(layer.path))
    return words


# -- frames: ASCII length, ':', then NUL-separated words --------------------------

def frame(words: Sequence[str]) -> bytes:
    payload = "\0".join(words).encode(errors="surrogateescape")
    return f"{len(payload)}:".encode() + payload


def take_frame(buffer: bytearray) -> Optional[List[str]]:
    """The words of the first whole frame in `buffer` (removed from it); None until a
    whole one is there."""
    head, sep, _ = buffer.partition(b":")
    if not sep or not head.isdigit() or len(buffer) < len(head) + 1 + int(head):
        return None
    start, size = len(head) + 1, int(head)
    payload = bytes(buffer[start:start + size])
    del buffer[:start + size]
    return payload.decode(errors="surrogateescape").split("\0") if payload else []


def read_frame(conn: _socket.socket, buffer: bytearray) -> Optional[List[str]]:
    """The next frame's words, None at the end of the connection."""
    while True:
        words = take_frame(buffer)
        if words is not None:
            return words
        block = conn.recv(65536)
        if not block:
            return None
        buffer += block


def _connect(sock: str) -> Optional[_socket.socket]:
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(sock)
    except OSError:
        conn.close()
        return None
    return conn


def _ask(sock: str, request: Sequence[str]) -> Tuple[Optional[_socket.socket],
                                                       List[List[str]]]:
    """Send `request`; the connection and the reply's frames ([] when no keeper)."""
    conn = _connect(sock)
    if conn is None:
        return None, []
    buffer = bytearray()
    try:
        conn.sendall(frame(request))
        first = read_frame(conn, buffer)
        if first is None:
            conn.close()
            return None, []
        frames = [first]
        if first[:1] == [OK]:
            for _ in range(4):
                more = read_frame(conn, buffer)
                if more is None:
                    conn.close()
                    return None, []
                frames.append(more)
    except OSError:
        conn.close()
        return None, []
    return conn, frames


def _wait_gone(conn: _socket.socket) -> None:
    """An idle retiring keeper closes the connection once it has unmounted."""
    conn.settimeout(_RETIRE_WAIT)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


def _locked(lock: str) -> int:
    os.makedirs(os.path.dirname(lock), mode=0o700, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _peer(conn: _socket.socket) -> Tuple[int, int]:
    """(pid, uid) of the process at the other end, in this process's namespaces."""
    raw = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    order = sys.byteorder
    return int.from_bytes(raw[0:4], order), int.from_bytes(raw[4:8], order)


def _kept(conn: _socket.socket, frames: List[List[str]]) -> Kept:
    status, lowers, args, branches, merged = frames
    root = Root(args, branches, merged[0] or None) if args else None
    return Kept(_peer(conn)[0], status[1], tuple(lowers), root, conn)


def _retire_stale(conn: Optional[_socket.socket], frames: List[List[str]]) -> None:
    if conn is None:
        return
    if frames[0][:2] == [STALE, IDLE]:
        _wait_gone(conn)
    else:
        conn.close()


def join(cfg: Config, as_root: bool, environ: Mapping[str, str]) -> Optional[Kept]:
    """Enter the namespaces of the image's keeper for `cfg` (starting one when there is
    none, or retiring one of another key); None when no keeper can serve, and the
    caller makes its own mounts."""
    from fim.runtime import idmap

    paths = cfg.paths
    lock, sock = where(paths)
    ids = idmap.wanted(cfg.uid, as_root, paths.ids_mark, environ)
    request = [USE] + key(cfg, ids)
    lock_fd = _locked(lock)
    try:
        conn, frames = _ask(sock, request)
        if conn is not None and frames[0][:1] == [OK]:
            debug(cfg.debug, f"Keeper: reusing the mounts of keeper {_peer(conn)[0]}")
        else:
            if conn is not None:
                debug(cfg.debug, "Keeper: the running keeper is stale, starting a fresh one")
            _retire_stale(conn, frames)
            from fim.runtime.keeper import daemon

            if not daemon.start(cfg, as_root, environ, request[1:], lock, sock):
                debug(cfg.debug, "Keeper: could not start one, mounting for this run")
                return None
            conn, frames = _ask(sock, request)
            if conn is None or frames[0][:1] != [OK]:
                _retire_stale(conn, frames)
                return None
            debug(cfg.debug, f"Keeper: started keeper {_peer(conn)[0]}")
    finally:
        os.close(lock_fd)
    kept = _kept(conn, frames)
    try:
        _enter(kept.pid, cfg.uid)
    except OSError as e:
        debug(cfg.debug, f"Keeper: cannot join it ({e.strerror}), mounting for this run")
        conn.close()
        return None
    return kept


def _enter(pid: int, uid: int) -> None:
    """Join the keeper's user and mount namespaces, then copy the latter for this
    instance; its next child is PID 1 of a new PID namespace."""
    from fim.runtime import libc, namespaces

    if uid != 0:
        namespaces.setns_path(f"/proc/{pid}/ns/user")
    namespaces.setns_path(f"/proc/{pid}/ns/mnt")
    libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWPID)


def retire(paths: Paths) -> None:
    """Have the image's keeper end once no instance uses it, and wait for an idle one
    to be gone: before a commit clears the upper dir the keeper's overlay holds, and
    when keeping is off."""
    lock, sock = where(paths)
    if not os.path.exists(sock):
        return
    lock_fd = _locked(lock)
    try:
        conn, frames = _ask(sock, [RETIRE])
        _retire_stale(conn, frames)
    finally:
        os.close(lock_fd)

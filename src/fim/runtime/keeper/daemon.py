"""The keeper process: started by a launch, detached from it, serving its mounts.

Two processes, as an instance has: the first one (`_keeper`) leaves the caller's
session, enters new namespaces as an instance would (idmap.enter) and forks the
second (`_serve`), PID 1 of the new PID namespace, which mounts the layers and
the root, listens on the socket and answers launches until it has been idle for
FIM_KEEP seconds. The first one has nothing to do but wait and clean the
directories up; its death (SIGKILL included) kills the second through the
parent-death signal, and with it the PID namespace, every daemon, every mount.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import time

from fim.runtime import idmap, instance, keeper, namespaces, process
from fim.runtime.layers.mount import mount_all
from fim.runtime.record import replace
from fim.runtime.unwind import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Dict, List, Mapping, Optional, Sequence

    from fim.runtime.config import Config
    from fim.runtime.overlays import Root
else:
    import _signal

READY = b"1"
# When an idle keeper's time is up while a launch holds the lock (it is asking this
# keeper), it looks again this much later.
_RECHECK = 0.05


def start(cfg: Config, as_root: bool, environ: Mapping[str, str], key: Sequence[str],
          lock: str, sock: str) -> bool:
    """Start a keeper for `cfg` (the caller holds `lock`); whether it is ready."""
    read_end, write_end = os.pipe()
    process.detach(lambda: _keeper(cfg, as_root, environ, key, lock, sock, write_end),
                   write_end)
    os.close(write_end)
    return process.read_all(read_end) == READY


def _detach_output(log: str) -> None:
    """No descriptor of the caller's stays open: a caller reading the program's
    output through a pipe must not wait for the keeper."""
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def _keeper(cfg: Config, as_root: bool, environ: Mapping[str, str], key: Sequence[str],
            lock: str, sock: str, ready: int) -> int:
    for sig in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_IGN)
    paths = replace(cfg.paths, pid=os.getpid())
    cfg = replace(cfg, paths=paths)
    os.makedirs(paths.dir_logs, exist_ok=True)
    os.makedirs(paths.dir_work, exist_ok=True)
    _detach_output(paths.log("keeper"))
    process.set_title([os.path.basename(paths.image), "fim-keeper"])
    try:
        ids = idmap.enter(cfg.uid, cfg.gid, as_root, paths.ids_mark, environ,
                          paths.log("newuidmap"), host_mounts=True)
        init = process.fork(lambda: _serve(cfg, environ, key, ids, lock, sock, ready))
        os.close(ready)

        def forward(signum: int, _frame: object) -> None:
            process.kill([init], signum)

        _signal.signal(_signal.SIGTERM, forward)
        instance.register(paths, init, keeper=True)
        return process.wait(init)
    finally:
        instance.finish(paths)


class _Stop(Exception):
    """SIGTERM: unmount and end."""


def _stop(_signum: int, _frame: object) -> None:
    raise _Stop()


def _serve(cfg: Config, environ: Mapping[str, str], key: Sequence[str], ids: str,
           lock: str, sock: str, ready: int) -> int:
    """PID 1 of the keeper: mount, answer, unmount when idle."""
    from fim.runtime import writable

    namespaces.die_with_parent(_signal.SIGKILL)
    namespaces.mount_proc()
    _signal.signal(_signal.SIGTERM, _stop)
    try:
        with Stack() as stack:
            held: List[socket.socket] = []  # closed last (pushed first): after every unmount
            stack.push(_close_all, held)
            lowers = mount_all(stack, cfg.layers, cfg.paths, environ, cfg.debug)
            # The root too, with casefold's view: a FUSE overlay, or the kernel's.
            root = writable.keep(stack, cfg, writable.spec(cfg, lowers, environ))
            listener = _listen(stack, sock)
            reply = _reply(ids, lowers, root)
            os.write(ready, READY)
            os.close(ready)
            upper = _Held(cfg.paths.dir_upper)
            stack.push(upper.close)
            _Server(listener, list(key), reply, cfg.keep, lock, sock, held, upper).run()
    except _Stop:
        return 0
    return 0


def _close_all(conns: List[socket.socket]) -> None:
    for conn in conns:
        conn.close()


def _listen(stack: Stack, sock: str) -> socket.socket:
    try:
        os.unlink(sock)  # left by a keeper that was killed (the caller holds the lock)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stack.push(listener.close)
    listener.bind(sock)
    mine = os.stat(sock).st_ino
    stack.push(_unlink_if, sock, mine)
    listener.listen(64)
    return listener


def _unlink_if(sock: str, inode: int) -> None:
    """Remove the socket path if it is still this keeper's."""
    try:
        if os.stat(sock).st_ino == inode:
            os.unlink(sock)
    except FileNotFoundError:
        pass


def _reply(ids: str, lowers: Sequence[str], root: Optional[Root]) -> bytes:
    # Its own number is not sent: launches read it from the connection (SO_PEERCRED),
    # in their own PID namespace.
    status = [keeper.OK, ids]
    if root is None:
        parts: List[List[str]] = [status, list(lowers), [], [], [""]]
    else:
        parts = [status, list(lowers), list(root.args), list(root.branches),
                 [root.merged or ""]]
    return b"".join(keeper.frame(p) for p in parts)


class _Held:
    """The upper dir as it was when the keeper started: a data dir deleted and made again
    may get the same inode number, so the key cannot tell; an open descriptor can (its
    directory has no links left). Nothing is served over a deleted one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def current(self) -> bool:
        try:
            held, now = os.fstat(self.fd), os.stat(self.path)
        except OSError:
            return False
        return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def close(self) -> None:
        os.close(self.fd)


class _Server:
    """The connections of one keeper: a launch's stays open while its instance runs."""

    def __init__(self, listener: socket.socket, key: List[str], reply: bytes, keep: float,
                 lock: str, sock: str, held: List[socket.socket], upper: _Held) -> None:
        self.listener = listener
        self.key = key
        self.reply = reply
        self.keep = keep
        self.lock = lock
        self.sock = sock
        self.instances: Dict[int, socket.socket] = {}
        self.pending: Dict[int, socket.socket] = {}  # not yet asked
        self.buffers: Dict[int, bytearray] = {}
        self.retiring = False
        self.held = held  # who waits for this keeper's end
        self.upper = upper
        self.poll = select.poll()
        self.poll.register(listener.fileno(), select.POLLIN)
        self.idle_since = time.monotonic()

    def run(self) -> None:
        while True:
            timeout: Optional[float] = None
            if not self.instances and not self.pending:
                if self.retiring:
                    return
                left = self.idle_since + self.keep - time.monotonic()
                if left <= 0:
                    if self._leave():
                        return
                    left = _RECHECK
                timeout = left
            for fd, _ in self.poll.poll(None if timeout is None else int(timeout * 1000) + 1):
                if fd == self.listener.fileno():
                    self._accept()
                else:
                    self._readable(fd)
            process.reap(block=False)  # daemons are orphans of this init

    def _leave(self) -> bool:
        """Idle time is up: stop taking launches, unless one holds the lock now."""
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._close_listener()
            return True
        finally:
            os.close(fd)

    def _close_listener(self) -> None:
        if self.retiring:
            return
        self.retiring = True
        self.poll.unregister(self.listener.fileno())
        _unlink_if(self.sock, os.fstat(self.listener.fileno()).st_ino)
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.pending[conn.fileno()] = conn
        self.buffers[conn.fileno()] = bytearray()
        self.poll.register(conn.fileno(), select.POLLIN)

    def _drop(self, fd: int) -> None:
        conn = self.instances.pop(fd, None) or self.pending.pop(fd, None)
        self.buffers.pop(fd, None)
        try:
            self.poll.unregister(fd)
        except KeyError:
            pass
        if conn is not None:
            conn.close()
        if not self.instances:
            self.idle_since = time.monotonic()

    def _readable(self, fd: int) -> None:
        if fd in self.instances:
            # An instance's connection says nothing more: readable means it ended.
            try:
                data = self.instances[fd].recv(4096)
            except OSError:
                data = b""
            if not data:
                self._drop(fd)
            return
        conn = self.pending[fd]
        try:
            conn.setblocking(False)
            block = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            block = b""
        if not block:
            self._drop(fd)
            return
        self.buffers[fd] += block
        words = keeper.take_frame(self.buffers[fd])
        if words is None:
            return
        del self.pending[fd]
        if (words[:1] == [keeper.USE] and words[1:] == self.key and not self.retiring
                and self.upper.current()):
            self.instances[fd] = conn
            conn.setblocking(True)
            _send(conn, self.reply)
            return
        # Another key, or a commit's request: no new instance from now on.
        self._close_listener()
        idle = not self.instances
        _send(conn, keeper.frame([keeper.STALE, keeper.IDLE if idle else keeper.BUSY]))
        if idle:
            # The connection closes when this process ends, after the unmounts: the
            # one who asked waits for that.
            self.poll.unregister(fd)
            self.held.append(conn)
        else:
            self._drop(fd)


def _send(conn: socket.socket, data: bytes) -> None:
    try:
        conn.setblocking(True)
        conn.sendall(data)
    except OSError:
        pass

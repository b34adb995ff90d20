"""Mount and serve: /dev/fuse, mount(2), the readiness pipe, the serving threads.

The started process opens SOURCE and /dev/fuse, mounts, and forks. The child answers
the kernel's INIT, writes one byte on a pipe and serves with THREADS threads, each
reading /dev/fuse (the kernel hands every request to exactly one reader, so a long
directory scan in one thread leaves reads to the others). The parent exits 0 on that
byte; without it, it detaches the mount and fails. When the mount goes away, every
read gives ENODEV and the server exits.
"""

from __future__ import annotations

import _thread
import os
from errno import EAGAIN, EINTR, EIO, ENOENT, ENOSYS, ESTALE

from fim.runtime import libc, process
from fim.runtime.casefold import protocol as P
from fim.runtime.casefold.fs import NODE_OPS, CaseFold, Worker
from fim.runtime.errors import EXIT_USAGE, error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

THREADS = 4


def serve_requests(fs: CaseFold, w: Worker, until_init: bool = False) -> bool:
    """Answer requests until the mount goes away (False), or after INIT (True)."""
    dev = fs.dev
    table = fs.handlers()
    node_ops = [op in NODE_OPS for op in range(P.OPCODES)]
    buf = w.buf
    bufs = [buf]
    readv = os.readv
    write = os.write
    head = P.IN_HEAD.unpack_from
    pack = P.OUT_HEADER.pack
    while True:
        try:
            n = readv(dev, bufs)
        except OSError as e:
            if e.errno in (ENOENT, EINTR, EAGAIN):  # ENOENT: an interrupted request
                continue
            return False  # ENODEV: unmounted; anything else: nothing more to serve
        op, unique, nodeid = head(buf, 4)
        handler = table[op] if op < P.OPCODES else None
        err = 0
        out = None
        if handler is None:
            err = ENOSYS
        else:
            try:
                out = handler(w, unique, nodeid, n)
            except OSError as e:
                err = e.errno or EIO
                if err == ENOENT and node_ops[op]:
                    err = ESTALE
            except Exception:
                err = EIO
        try:
            if err:
                write(dev, pack(16, -err, unique))
            elif out is not None:
                write(dev, pack(16 + len(out), 0, unique) + out)
        except OSError:
            pass  # the request was interrupted or the mount is gone
        if until_init and op == P.INIT and not err:
            return True


def serve(source_fd: int, dev: int, source: str, ready: int) -> int:
    """The server process: detached from the caller's session and terminal."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # Nothing inherited stays open: a caller reading our output to its end would wait.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in (source_fd, dev, ready):
            try:
                os.close(fd)
            except OSError:
                pass
    os.umask(0)  # modes arrive with the caller's umask applied
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one descriptor per open
    except (ImportError, OSError, ValueError):
        pass
    fs = CaseFold(source_fd, dev, source)
    if not serve_requests(fs, Worker(), until_init=True):
        return 1
    os.write(ready, b"1")
    os.close(ready)
    # _thread, not threading: the latter imports collections and functools at start-up.
    running = []
    for _ in range(THREADS - 1):
        lock = _thread.allocate_lock()
        lock.acquire()
        _thread.start_new_thread(serve_thread, (fs, lock))
        running.append(lock)
    serve_requests(fs, Worker())
    for lock in running:
        lock.acquire()  # released as the thread ends
    return 0


def serve_thread(fs: CaseFold, lock: _thread.LockType) -> None:
    try:
        serve_requests(fs, Worker())
    finally:
        lock.release()


def _serve_child(read_end: int, source_fd: int, dev: int, source: str, ready: int) -> int:
    os.close(read_end)
    return serve(source_fd, dev, source, ready)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        error("Usage: casefold SOURCE MOUNTPOINT")
        return EXIT_USAGE
    source, mountpoint = argv
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        error(f"Could not open source directory '{source}': {e.strerror}")
        return 1
    try:
        dev = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        error(f"Could not open /dev/fuse: {e.strerror}")
        return 1
    mode = os.fstat(source_fd).st_mode & 0o170000
    options = (f"fd={dev},rootmode={mode:o},user_id={os.getuid()},group_id={os.getgid()},"
               "default_permissions,allow_other")
    try:
        libc.mount("casefold", mountpoint, "fuse", options, libc.MS_NOSUID | libc.MS_NODEV)
    except OSError as e:
        error(f"Could not mount '{source}' on '{mountpoint}': {e.strerror}")
        return 1
    read_end, write_end = os.pipe()
    try:
        process.fork(lambda: _serve_child(read_end, source_fd, dev, source, write_end))
    except OSError as e:
        libc.detach(mountpoint)
        error(f"Could not start the server for '{mountpoint}': {e.strerror}")
        return 1
    os.close(write_end)
    os.close(dev)
    if os.read(read_end, 1) == b"1":
        return 0
    try:
        libc.detach(mountpoint)
    except OSError:
        pass
    error(f"The server of '{mountpoint}' ended before it answered the kernel")
    return 1

"""Run one program in the container: namespaces → layer mounts → overlay → bubblewrap.

The calling process (the launcher) enters new user, mount and PID namespaces
and forks an init for the instance. The init mounts the layers, starts
bubblewrap, waits for it and unwinds its mounts; if the launcher is killed,
the kernel kills the init (parent-death signal), every FUSE daemon with it, and
drops the mount namespace, so no mount outlives its instance.
"""

from __future__ import annotations

import os
import sys

from fim.runtime import namespaces, overlays, permissions, rootview, sandbox, settings, tools
from fim.runtime.config import Config
from fim.runtime.errors import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    FimError,
    debug,
    error,
    warn,
)
from fim.runtime.instance import remove_tree, sweep
from fim.runtime.layers import Layer, format_module
from fim.runtime.overlays import bwrap as native_overlay
from fim.runtime.overlays import fuse_overlayfs, unionfs, upperdir

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    # The C module: `signal` would import `enum`, milliseconds of start-up.
    import _signal
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

_FORWARDED = (_signal.SIGTERM, _signal.SIGHUP)
# The terminal sends these to the whole foreground group, the program included;
# the runtime only has to survive them.
_TERMINAL = (_signal.SIGINT, _signal.SIGQUIT)


def _spawn(argv: Sequence[str], env: Mapping[str, str], log: Optional[str]) -> int:
    actions: List[Tuple[object, ...]] = []
    if log is not None:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
    try:
        return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions)
    except OSError as e:
        raise FimError(f"Cannot start '{argv[0]}': {e.strerror}") from None


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _wait(pid: int) -> int:
    while True:
        try:
            return _exit_code(os.waitpid(pid, 0)[1])
        except InterruptedError:
            continue


def _mount_layers(cfg: Config, mounted: List[str], env: Mapping[str, str]) -> List[str]:
    """Mount every layer read-only, all at once; the mount points, newest first.

    Each successful mount point is added to `mounted` as soon as it exists, so the
    caller unwinds exactly what was mounted, on every path."""
    started = []
    for layer in cfg.layers:
        module = format_module(layer)
        tool = tools.require(cfg.paths.dir_runtime, module.TOOL, env, "to mount layers")
        point = cfg.paths.layer_mountpoint(layer.index)
        os.makedirs(point, exist_ok=True)
        debug(cfg.debug, f"Mounting layer from '{layer.path}' with offset '{layer.offset}'")
        log = os.path.join(cfg.paths.dir_logs, f"{module.TOOL}.log")
        argv = module.mount_argv(tool, layer.path, layer.offset, point)
        started.append((layer, point, _spawn(argv, env, log), log))
    failed: List[Tuple[Layer, str]] = []
    for layer, point, pid, log in started:
        if _wait(pid) == 0:
            mounted.append(point)
        else:
            failed.append((layer, log))
    if failed:
        layer, log = failed[0]
        raise FimError(f"Could not mount layer {layer.index} of '{layer.path}' (see {log})", 1)
    return [point for _, point, _, _ in reversed(started)]


def _identity(cfg: Config, as_root: bool, branches: Sequence[str],
              host_home: Optional[str]) -> sandbox.Identity:
    shell = "/bin/bash" if rootview.resolve(branches, "/bin/bash") else "/bin/sh"
    if as_root or cfg.uid == 0:
        return sandbox.Identity(0, 0, "root", host_home if cfg.uid == 0 and host_home
                                else "/root", shell)
    import pwd

    try:
        user = pwd.getpwuid(cfg.uid).pw_name
    except KeyError:
        user = f"user{cfg.uid}"
    return sandbox.Identity(cfg.uid, cfg.gid, user, host_home or f"/home/{user}", shell)


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _fim_vars(cfg: Config) -> Dict[str, str]:
    p = cfg.paths
    return {
        "FIM_BIN_SELF": p.image,
        "FIM_DIR_SELF": p.dir_self,
        "FIM_DIR_GLOBAL": p.dir_global,
        "FIM_DIR_APP": p.dir_app,
        "FIM_DIR_INSTANCE": p.dir_instance,
        "FIM_DIR_DATA": p.dir_data,
        "FIM_DIR_LAYERS": p.dir_layers,
    }


def _read_status(fd: int) -> Tuple[Optional[int], Optional[int]]:
    """Child pid and exit code from bubblewrap's JSON status stream (until it closes)."""
    chunks = []
    while True:
        try:
            block = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not block:
            break
        chunks.append(block)
    os.close(fd)
    child = code = None
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        # One flat object per line, e.g. { "exit-code": 7 }: no JSON parser needed.
        for key, value in _pairs(line):
            if key == "child-pid":
                child = value
            elif key == "exit-code":
                code = value
    return child, code


def _pairs(line: str) -> List[Tuple[str, int]]:
    pairs = []
    for item in line.strip().strip("{}").split(","):
        key, _, value = item.partition(":")
        value = value.strip()
        if value.isdigit():
            pairs.append((key.strip().strip('"'), int(value)))
    return pairs


def _not_started(branches: Sequence[str], program: str) -> int:
    """Why bubblewrap could not start the program: 127 not found, 126 not executable."""
    found = rootview.which(branches, program, sandbox.CONTAINER_PATH)
    if found is None:
        return EXIT_NOT_FOUND
    # Mode bits, not access(2): a FUSE layer without default_permissions answers
    # every access() with yes.
    return 1 if os.stat(found).st_mode & 0o111 else EXIT_CANNOT_EXECUTE


_SYS_MOUNT_FAILED = -1


def _overlay_mountable(cfg: Config, layer_dirs: Sequence[str]) -> bool:
    """Whether the kernel accepts the overlay bubblewrap tried: the SYS_mount probe."""
    paths = cfg.paths
    os.makedirs(paths.dir_mount, exist_ok=True)
    options = (f"lowerdir={':'.join(layer_dirs)},upperdir={paths.dir_upper},"
               f"workdir={paths.dir_work},userxattr")
    try:
        namespaces.mount("overlay", paths.dir_mount, "overlay", options)
    except OSError:
        return False
    namespaces.detach(paths.dir_mount)
    return True


def _mount_fuse_overlay(cfg: Config, backend: str, layer_dirs: Sequence[str],
                        mounted: List[str], env: Mapping[str, str]) -> str:
    """Mount the OVERLAYFS or UNIONFS merged root; its mount point."""
    paths = cfg.paths
    module = fuse_overlayfs if backend == overlays.OVERLAYFS else unionfs
    tool = tools.require(paths.dir_runtime, module.TOOL, env,
                         f"for the {backend} overlay", _alternatives(backend))
    os.makedirs(paths.dir_mount, exist_ok=True)
    if backend == overlays.OVERLAYFS:
        argv = fuse_overlayfs.mount_argv(tool, layer_dirs, paths.dir_upper, paths.dir_work,
                                         paths.dir_mount)
    else:
        keys = [_cache_key(layer) for layer in reversed(cfg.layers)]
        ro = unionfs.branches(list(zip(keys, layer_dirs)), os.path.join(paths.dir_app, "markers"),
                              os.path.join(paths.dir_instance, "unionfs"))
        argv = unionfs.mount_argv(tool, ro, paths.dir_upper, paths.dir_mount)
    log = os.path.join(paths.dir_logs, f"{module.TOOL}.log")
    if _wait(_spawn(argv, env, log)) != 0:
        raise FimError(f"Could not mount the {backend} overlay (see {log})", 1)
    mounted.append(paths.dir_mount)
    return paths.dir_mount


def _mount_casefold(cfg: Config, merged: str, mounted: List[str]) -> str:
    """The case-insensitive view of the merged root, served by a daemon of this
    instance (a fork of the init: no second interpreter start)."""
    point = os.path.join(cfg.paths.dir_data, "casefold")
    os.makedirs(point, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from fim.runtime.casefold import server

            code = server.main([merged, point])
        finally:
            os._exit(code)
    if _wait(pid) != 0:
        raise FimError("Could not mount the case-insensitive view", 1)
    mounted.append(point)
    return point


def _cache_key(layer: Layer) -> str:
    """Names a layer by its content: copies of one image share a runtime directory, and a
    layer at the same place in two of them may differ. The SquashFS superblock (times,
    counts, table offsets) and the tables at the end identify it."""
    import zlib

    with open(layer.path, "rb") as f:
        f.seek(layer.offset)
        head = f.read(96)
        f.seek(layer.offset + max(0, layer.size - 65536))
        tail = f.read(min(65536, layer.size))
    return f"{layer.size}:{zlib.crc32(head):08x}:{zlib.crc32(tail):08x}"


def _alternatives(backend: str) -> str:
    others = [n for n, b in overlays.NAMES.items() if b != backend]
    return (f"or use another overlay: FIM_OVERLAY={'|'.join(others)} for one run, "
            f"fim-overlay set {'|'.join(others)} for good")


def _attempt(cfg: Config, backend: str, layer_dirs: Sequence[str], mounted: List[str],
             program: Sequence[str], as_root: bool, env: Mapping[str, str], shell: bool,
             bwrap_pid: List[int]) -> int:
    """One start of bubblewrap on `backend`; _SYS_MOUNT_FAILED if its overlay was refused."""
    paths = cfg.paths
    lock = upperdir.prepare(os.path.join(paths.dir_data, "overlay.state"), paths.dir_upper,
                            backend, layer_dirs)
    try:
        if backend == overlays.BWRAP:
            root_args = native_overlay.bwrap_args(layer_dirs, paths.dir_upper, paths.dir_work)
            branches = [paths.dir_upper] + list(layer_dirs)
        else:
            merged = _mount_fuse_overlay(cfg, backend, layer_dirs, mounted, env)
            if cfg.casefold:
                merged = _mount_casefold(cfg, merged, mounted)
            root_args = ["--bind", merged, "/"]
            branches = [merged]
        granted = permissions.grant(cfg.permissions, env, cfg.uid)
        ident = _identity(cfg, as_root, branches, granted.home)
        if shell:
            program = [ident.shell] + list(program)
        read_end, write_end = os.pipe()
        os.set_inheritable(write_end, True)
        box = sandbox.Sandbox(
            bwrap=tools.require(paths.dir_runtime, "bwrap", env, "to start the container"),
            root_args=root_args,
            identity=ident,
            passwd=_write(os.path.join(paths.dir_instance, "passwd"),
                          sandbox.passwd_text(rootview.read_text(branches, "/etc/passwd"), ident)),
            group=_write(os.path.join(paths.dir_instance, "group"),
                         sandbox.group_text(rootview.read_text(branches, "/etc/group"), ident)),
            chdir=ident.home,
            status_fd=write_end,
            program=program,
            share_network=granted.share_network,
            unshare=settings.bits_to_names(cfg.unshare, settings.NAMESPACES),
            extra=granted.args + sandbox.bind_args(cfg.bindings, env),
        )
        child_env = sandbox.environment(env, ident, _fim_vars(cfg), granted.env,
                                        cfg.environment)
        bwrap_pid[:] = [_spawn(sandbox.argv(box), child_env, None)]
        os.close(write_end)
        _, code = _read_status(read_end)
        status = _wait(bwrap_pid[0])
        bwrap_pid.clear()
        if code is not None:
            return code
        if status != 1:
            return status
        # The program never started: a refused overlay, or a missing program.
        if backend == overlays.BWRAP and not _overlay_mountable(cfg, layer_dirs):
            return _SYS_MOUNT_FAILED
        return _not_started(branches, program[0])
    finally:
        os.close(lock)


def _init(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
          shell: bool) -> int:
    """PID 1 of the instance: mount, run bubblewrap, unwind."""
    namespaces.die_with_parent(_signal.SIGKILL)
    namespaces.mount_proc()
    bwrap_pid: List[int] = []

    def forward(signum: int, _frame: object) -> None:
        _kill(bwrap_pid, signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    mounted: List[str] = []
    try:
        layer_dirs = _mount_layers(cfg, mounted, env)
        for d in layer_dirs:
            debug(cfg.debug, f"Overlay layer '{d}'", "I")
        code = _attempt(cfg, cfg.overlay, layer_dirs, mounted, program, as_root, env, shell,
                        bwrap_pid)
        if code == _SYS_MOUNT_FAILED:
            sys.stderr.write("ERROR: Bwrap failed SYS_mount, retrying with unionfs-fuse...\n")
            sys.stderr.flush()
            debug(cfg.debug, f"Overlay type: {overlays.DEBUG_NAMES[overlays.UNIONFS]}")
            code = _attempt(cfg, overlays.UNIONFS, layer_dirs, mounted, program, as_root, env,
                            shell, bwrap_pid)
        return code
    finally:
        for point in reversed(mounted):
            namespaces.detach(point)


def _kill(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def run(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
        shell: bool = False) -> int:
    """Run `program` (after the container's shell when `shell`); its exit code."""
    if cfg.torn_bytes:
        warn(f"Ignoring an incomplete last layer ({cfg.torn_bytes} bytes); "
             "the next layer appended will replace it")
    if cfg.debug:
        for problem in cfg.problems:
            warn(f"{problem}; using its default")
    if cfg.casefold_fallback and cfg.debug:
        warn("casefold cannot be used with bwrap overlayfs, falling back to unionfs")
    debug(cfg.debug, f"Overlay type: {overlays.DEBUG_NAMES[cfg.overlay]}")
    paths = cfg.paths
    if cfg.overlay != overlays.BWRAP:
        # Checked before anything is mounted.
        module = fuse_overlayfs if cfg.overlay == overlays.OVERLAYFS else unionfs
        tools.require(paths.dir_runtime, module.TOOL, env, f"for the {cfg.overlay} overlay",
                      _alternatives(cfg.overlay))
    for d in (paths.dir_upper, paths.dir_work, paths.dir_logs):
        os.makedirs(d, exist_ok=True)
    for sig in _TERMINAL:
        _signal.signal(sig, lambda *_: None)
    namespaces.enter(cfg.uid, cfg.gid)
    child = os.fork()
    if child == 0:
        code = 1
        try:
            code = _init(cfg, program, as_root, env, shell)
        except FimError as e:
            error(e.message)
            code = e.code
        except BaseException as e:  # noqa: BLE001 - the init must never show a traceback
            error(f"Internal error: {type(e).__name__}: {e}")
        finally:
            os._exit(code)

    def forward(signum: int, _frame: object) -> None:
        _kill([child], signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    # What fim-instance needs to find this instance: its image and its init.
    _write(os.path.join(paths.dir_instance, "image"), paths.image)
    _write(os.path.join(paths.dir_instance, "init"), str(child))
    code = _wait(child)
    remove_tree(paths.dir_work)
    remove_tree(paths.dir_instance)
    sweep(paths.dir_work_root, paths.pid)
    sweep(paths.dir_instance_root, paths.pid)
    return code

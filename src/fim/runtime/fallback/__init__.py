"""The opt-in fallback where the host refuses namespaces (FIM_FALLBACK=proot).

The layers are mounted with squashfuse_ll in a directory of this run
(`{FIM_DIR_APP}/fallback/<pid>/`), the writable overlay with fuse-overlayfs (or
unionfs-fuse, when the image's overlay is unionfs) over the data dir's upper
directory, claimed and left in the backend's form as every run does
(upperdir.py); then proot runs the program in the merged root with the host's
/dev, /proc and /sys, the generated passwd and group, a /tmp of the run's own,
the home and what the permissions and fim-bind entries open. An ordinary user
mounts through the host's setuid fusermount3, root directly.

What it gives up against the namespaced run (docs/portability.md): no PID, mount
or network namespace (the program sees the host's processes and network, the
mounts show in the host's mount table), no seccomp filter or Landlock scope, binds
are writable, setuid programs inside do not work, every system call pays
proot's ptrace round trip, and what the program leaves behind is killed at its
end, without a grace period. The watcher (watch.py) makes sure nothing of the
run outlives its launcher.
"""

from __future__ import annotations

import os
import sys

from fim.runtime import identity, instance, permissions, process, rootview, sandbox, tools
from fim.runtime.errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, FimError, debug
from fim.runtime.fallback import proot, watch
from fim.runtime.image.settings import PERMISSIONS
from fim.runtime.layers import format_module
from fim.runtime.overlays import OVERLAYFS, UNIONFS, upperdir
from fim.runtime.unwind import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import List, Mapping, Optional, Sequence, Tuple

    from fim.runtime.config import Config
    from fim.runtime.overlays import Backend
    from fim.runtime.sandbox import Identity
else:
    import _signal

_TERMINAL = (_signal.SIGINT, _signal.SIGQUIT)


def _tool(runtime: str, names: Sequence[str], env: Mapping[str, str], why: str) -> List[str]:
    for name in names:
        found = tools.find(runtime, name, env)
        if found is not None:
            return found
    return tools.require(runtime, names[0], env, why)


def _last_line(log: str) -> str:
    """What a tool said last: its log goes with the run's directory."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "the tool said nothing"


def _mount_layers(stack: Stack, cfg: Config, base: str, fusermount: Optional[List[str]],
                  env: Mapping[str, str]) -> List[str]:
    """Every layer mounted under `base` (all tools started at once); the mount points,
    newest first, each on `stack` the moment it exists."""
    started: List[Tuple[int, str, int, str]] = []
    for layer in cfg.layers:
        module = format_module(layer)
        tool = _tool(cfg.paths.dir_runtime, module.TOOLS, env, "to mount layers")
        point = os.path.join(base, "layers", str(layer.index))
        os.makedirs(point, exist_ok=True)
        debug(cfg.debug, f"Mounting layer from '{layer.path}' with offset '{layer.offset}'")
        log = os.path.join(base, "logs", f"layer-{layer.index}.log")
        argv = module.mount_argv(tool, layer.path, layer.offset, point)
        started.append((layer.index, point, process.spawn(argv, env, log), log))
    failed = []
    for index, point, pid, log in started:
        if process.wait(pid) == 0:
            stack.push(watch.unmount, point, fusermount, env)
        else:
            failed.append((index, log))
    if failed:
        index, log = failed[0]
        raise FimError(f"Could not mount layer {index} without namespaces: {_last_line(log)}",
                       1)
    return [point for _, point, _, _ in reversed(started)]


def backend_of(cfg: Config) -> Backend:
    """A FUSE overlay: the image's own when it is one, else fuse-overlayfs (it reads
    the kernel overlay's form of the upper dir, so switching back costs nothing)."""
    return cfg.backend if cfg.backend.tool else OVERLAYFS


def _overlay(stack: Stack, cfg: Config, backend: Backend, lowers: Sequence[str], base: str,
             fusermount: Optional[List[str]], env: Mapping[str, str]) -> str:
    """The writable root mounted at `base`/mount; its path."""
    paths = cfg.paths
    point = os.path.join(base, "mount")
    os.makedirs(point, exist_ok=True)
    tool = tools.require(paths.dir_runtime, backend.tool, env,
                         f"for the {backend.name} overlay of FIM_FALLBACK")
    if backend is UNIONFS:
        from fim.runtime.overlays import unionfs

        keys = [unionfs.cache_key(layer) for layer in reversed(cfg.layers)]
        ro = unionfs.branches(list(zip(keys, lowers)), paths.dir_markers,
                              os.path.join(base, "unionfs"))
        argv = unionfs.mount_argv(tool, ro, paths.dir_upper, point)
    else:
        from fim.runtime.overlays import fuse_overlayfs

        argv = fuse_overlayfs.mount_argv(tool, lowers, paths.dir_upper, paths.dir_work, point)
    log = os.path.join(base, "logs", f"{backend.tool}.log")
    if process.run(argv, env, log) != 0:
        raise FimError(f"Could not mount the {backend.name} overlay without namespaces: "
                       f"{_last_line(log)}", 1)
    stack.push(watch.unmount, point, fusermount, env)
    return point


def _make_home(upper: str, branches: Sequence[str], ident: Identity) -> None:
    """The container's own home, made in the upper dir before the overlay is mounted
    (bubblewrap's --dir does it as root of the namespace; here the user may not write
    /home of the layers)."""
    if rootview.resolve(branches, ident.home) is None:
        os.makedirs(os.path.join(upper, ident.home.lstrip("/")), exist_ok=True)


def _missing(root: str, program: str) -> int:
    """127 when the program is not in the container, 126 when not executable, else 0."""
    found = rootview.which([root], program, sandbox.CONTAINER_PATH)
    if found is None:
        sys.stderr.write(f"E::'{program}' was not found in the container\n")
        return EXIT_NOT_FOUND
    if not os.stat(found).st_mode & 0o111:
        sys.stderr.write(f"E::'{program}' is not executable\n")
        return EXIT_CANNOT_EXECUTE
    return 0


def _binds(cfg: Config, granted: permissions.Grant, env: Mapping[str, str], base: str,
           passwd: str, group: str) -> List[Tuple[str, str]]:
    tmp = os.path.join(base, "tmp")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    fixed = [(d, d) for d in proot.HOST_BINDS]
    fixed += [(passwd, "/etc/passwd"), (group, "/etc/group"), (tmp, "/tmp")]
    extra, notes = proot.binds(granted.args + sandbox.bind_args(cfg.bindings, env))
    for note in notes:
        debug(cfg.debug, f"Fallback bind: {note}")
    return fixed + extra


def run(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
        shell: bool) -> int:
    """Run `program` without namespaces: FUSE mounts in the host, proot on top."""
    paths = cfg.paths
    if cfg.casefold:
        raise FimError("casefold needs the namespaces this host refuses; FIM_FALLBACK "
                       "cannot run this image")
    prooted = tools.require(paths.dir_runtime, "proot", env, "for FIM_FALLBACK=proot")
    fusermount = None
    if cfg.uid != 0:
        # The host's: it is setuid, and the mount table is the host's.
        host = tools.on_host("fusermount3", env) or tools.on_host("fusermount", env)
        if host is None:
            raise FimError("'fusermount3' is required for FIM_FALLBACK=proot but was not "
                           "found; install fuse3")
        fusermount = [host]
    base_dir = os.path.join(paths.dir_app, "fallback")
    watch.sweep(base_dir, paths.pid, fusermount, env)
    base = os.path.join(base_dir, str(paths.pid))
    for d in (os.path.join(base, "logs"), paths.dir_upper, paths.dir_work):
        os.makedirs(d, exist_ok=True)
    for sig in _TERMINAL:
        _signal.signal(sig, lambda *_: None)
    backend = backend_of(cfg)
    debug(cfg.debug, f"Fallback: proot without namespaces, {backend.debug_name} overlay, "
          f"mounts under '{base}' (in the host's mount table)")
    try:
        with Stack() as stack:
            # Pushed first, run last: the directory goes once nothing is mounted in it.
            stack.push(watch.remove, base, fusermount, env)
            title = [os.path.basename(paths.image), "fim-fallback"]
            watcher = watch.start(stack, cfg.exit_grace, base, [paths.dir_work], fusermount,
                                  env, title)
            lowers = _mount_layers(stack, cfg, base, fusermount, env)
            upperdir.claim(stack, paths.state_file, paths.dir_upper, backend, lowers)
            granted = permissions.grant(cfg.permissions, env, cfg.uid)
            branches = [paths.dir_upper, *lowers]
            ident = identity.resolve(cfg.uid, cfg.gid, as_root, branches, granted.home)
            if granted.home is None:
                _make_home(paths.dir_upper, branches, ident)
            merged = _overlay(stack, cfg, backend, lowers, base, fusermount, env)
            argv = [ident.shell, *program] if shell else list(program)
            missing = _missing(merged, argv[0])
            if missing:
                return missing
            passwd, group = identity.write_files(ident, [merged], base)
            binds = _binds(cfg, granted, env, base, passwd, group)
            if not PERMISSIONS.has(cfg.permissions, "network"):
                debug(cfg.debug, "Fallback: the host's network is reachable (no network "
                      "namespace)")
            # The container's shell reports the program's exit status (watch.py);
            # without one, proot's is all there is.
            reporter = rootview.resolve([merged], "/bin/sh") is not None
            if reporter:
                argv = ["/bin/sh", "-c", watch.REPORTER, "fim", *argv]
            command = proot.argv(prooted, merged, binds, ident.home,
                                 ident.uid == 0 and cfg.uid != 0, argv)
            child_env = sandbox.environment(env, ident, paths.fim_vars(), granted.env,
                                            cfg.environment, granted.appended)
            # proot's loader goes to this run's directory; the variable also marks the
            # run's processes for a later sweep (watch.py).
            child_env[watch.MARK] = base
            return watch.run(watcher, command, child_env, reporter)
    finally:
        instance.finish(paths)

"""Run one program in the container: namespaces → layer mounts → writable root →
bubblewrap → exit code → unwind.

The calling process (the launcher) enters new user, mount and PID namespaces
and forks an init for the instance. The init mounts the layers, has the
backend build the writable root, starts bubblewrap, waits for it and unwinds
everything it set up; if the launcher is killed, the kernel kills the init
(parent-death signal), every FUSE daemon with it, and drops the mount
namespace, so no mount outlives its instance.
"""

from __future__ import annotations

import os
import sys

from fim.runtime import (
    fimvars,
    hostcheck,
    identity,
    idmap,
    instance,
    namespaces,
    overlays,
    permissions,
    process,
    reaper,
    rootview,
    sandbox,
    tools,
    writable,
)
from fim.runtime.errors import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    FimError,
    debug,
    error,
    os_failure,
    warn,
)
from fim.runtime.image.settings import PERMISSIONS, UNSHARE
from fim.runtime.layers import verify
from fim.runtime.layers.mount import mount_all
from fim.runtime.overlays import upperdir
from fim.runtime.unwind import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    # The C module: `signal` would import `enum`, milliseconds of start-up.
    import _signal
if TYPE_CHECKING:
    from typing import List, Mapping, Optional, Sequence

    from fim.runtime.config import Config
    from fim.runtime.keeper import Kept

_FORWARDED = (_signal.SIGTERM, _signal.SIGHUP)
# The terminal sends these to the whole foreground group, the program included;
# the runtime only has to survive them.
_TERMINAL = (_signal.SIGINT, _signal.SIGQUIT)
# The program never started because the backend's root was refused.
_REFUSED = -1


def _not_started(branches: Sequence[str], program: str) -> int:
    """Why bubblewrap could not start the program: 127 not found, 126 not executable."""
    found = rootview.which(branches, program, sandbox.CONTAINER_PATH)
    if found is None:
        return EXIT_NOT_FOUND
    # Mode bits, not access(2): a FUSE layer without default_permissions answers
    # every access() with yes.
    return 1 if os.stat(found).st_mode & 0o111 else EXIT_CANNOT_EXECUTE


def _make_home(upper: str, home: str) -> None:
    """The container's home, made in the upper directory (or through the kept root)
    before bubblewrap runs: made
    by bubblewrap (--dir) in many instances starting at once, the kernel overlay
    answered one of them ENOTEMPTY and it never started. Best effort: a marker of a
    deleted home, or a file there, is left for bubblewrap to report as before."""
    try:
        os.makedirs(os.path.join(upper, home.lstrip("/")), exist_ok=True)
    except OSError:
        pass


def _report_grant(cfg: Config, granted: permissions.Grant, env: Mapping[str, str]) -> None:
    """FIM_DEBUG: the permissions granted, what each bind made, the fim-bind entries."""
    names = PERMISSIONS.named(cfg.permissions)
    debug(True, f"Permissions: {','.join(names) if names else 'none'}")
    for line in granted.report():
        debug(True, f"Permission: {line}")
    for b in cfg.bindings:
        debug(True, f"Bind: {b.kind} {sandbox.expand(b.src, env)} {b.dst}")


def _scope(cfg: Config, env: Mapping[str, str]) -> None:
    """With the host's network, keep the host's abstract Unix sockets out of reach
    (landlock.py), unless a granted permission's server has no other socket."""
    if not PERMISSIONS.has(cfg.permissions, "network") or "net" in UNSHARE.named(cfg.unshare):
        return  # a network namespace of its own: no host abstract socket is in it
    needs = permissions.needs_abstract_sockets(cfg.permissions, env)
    if needs:
        debug(cfg.debug, f"Abstract sockets: reachable, needed by {','.join(needs)}")
        return
    from fim.runtime import landlock

    if landlock.scope_abstract_sockets():
        debug(cfg.debug, "Abstract sockets: the host's are out of reach (Landlock)")
    else:
        debug(cfg.debug, "Abstract sockets: the host's are reachable (no Landlock scoping "
              f"on this kernel, ABI {landlock.abi()} < {landlock.MIN_ABI})")


def _filter(stack: Stack, cfg: Config, foreign_chown: bool) -> Optional[int]:
    """The seccomp program for the sandboxed program (seccomp.py): terminal injection
    and the calls no desktop program needs refused; with `foreign_chown` (root over
    the caller's ids alone), giving files to others succeeds without effect, so that
    package installs go on. None where this machine or kernel has no filter."""
    from fim.runtime import seccomp

    machine = os.uname().machine
    code = seccomp.program(machine, foreign_chown)
    if code is None:
        debug(cfg.debug, f"Seccomp: no filter (no table for {machine})")
        return None
    if not seccomp.supported():
        debug(cfg.debug, "Seccomp: no filter (this kernel runs no seccomp programs)")
        return None
    debug(cfg.debug, f"Seccomp: {len(code) // 8} instructions for "
          f"{','.join(abi.name for abi in seccomp.MACHINES[machine])}"
          f"{', foreign chown succeeds' if foreign_chown else ''}")
    fd = seccomp.as_fd(code)
    stack.push(os.close, fd)
    return fd


def _attempt(cfg: Config, backend: overlays.Backend, lowers: Sequence[str],
             program: Sequence[str], as_root: bool, env: Mapping[str, str], shell: bool,
             ids: str, children: List[int], kept: Optional[Kept]) -> int:
    """One start of bubblewrap on `backend`'s root; _REFUSED if the root was refused.
    What it mounts and locks is undone before it returns."""
    paths = cfg.paths
    spec = writable.spec(cfg, lowers, env)
    if not overlays.implementation(backend).fits(spec):
        return _REFUSED  # known before anything starts: no failed attempt to show
    with Stack() as stack:
        held = kept.root if kept is not None and backend is cfg.backend else None
        if held is not None:
            # The keeper holds this root; the instance shares its claim on the upper dir.
            upperdir.claim(stack, paths.state_file, paths.dir_upper, backend, lowers)
            root = held
        else:
            root = writable.build(stack, cfg, backend, spec)
        from fim.runtime import portal

        granted = permissions.grant(cfg.permissions, env, cfg.uid, portal=portal.ends(paths))
        if cfg.debug:
            _report_grant(cfg, granted, env)
        wanted = sandbox.fim_env(cfg.environment, env)
        ident = identity.resolve(cfg.uid, cfg.gid, as_root, root.branches, granted.home, wanted)
        if shell:
            program = [ident.shell] + list(program)
        passwd, group = identity.write_files(ident, root.branches, paths.dir_instance)
        if granted.home is None:
            # Through a kept root, not beside it: its overlay serves other instances
            # and would not see a directory made in its upper dir underneath it.
            _make_home(held.merged if held and held.merged else spec.upper, ident.home)
        rc_args: List[str] = []
        if "PS1" in wanted and identity.is_bare_bash(program):
            # The image's prompt: bash's own start-up files, then PS1 (they set theirs).
            rc_args = ["--ro-bind", identity.write_bashrc(wanted["PS1"], paths.dir_instance),
                       identity.BASHRC]
            program = [program[0], "--rcfile", identity.BASHRC]
        read_end, write_end = os.pipe()
        os.set_inheritable(write_end, True)
        box = sandbox.Sandbox(
            bwrap=tools.require(paths.dir_runtime, "bwrap", env, "to start the container"),
            root_args=root.args,
            identity=ident,
            passwd=passwd,
            group=group,
            chdir=ident.home,
            status_fd=write_end,
            program=program,
            share_network=granted.share_network,
            unshare=UNSHARE.named(cfg.unshare),
            extra=granted.args + rc_args + sandbox.bind_args(cfg.bindings, env),
            # Root inside with every id its namespace maps, when it maps more than one.
            userns=not (ident.uid == 0 and ids != idmap.SINGLE_ID),
            seccomp_fd=_filter(stack, cfg, ident.uid == 0 and ids == idmap.SINGLE_ID),
        )
        child_env = sandbox.environment(env, ident, fimvars.values(cfg, root.branches),
                                        granted.env, cfg.environment, granted.appended)
        try:
            children[:] = [reaper.start(sandbox.argv(box), child_env, cfg.exit_grace)]
        finally:
            os.close(write_end)
        _, code = sandbox.parse_status(process.read_all(read_end).decode(errors="replace"))
        status = process.wait(children[0])
        children.clear()
        if code is not None:
            return code
        if status != 1:
            return status
        # The program never started: a refused root, or a missing program.
        if overlays.implementation(backend).refused(spec):
            return _REFUSED
        refusal = (hostcheck.nested(cfg.uid, cfg.host or hostcheck.evidence()) if box.userns
                   else None)
        if refusal is not None:
            raise refusal  # bubblewrap's own user namespace: the one line that says why
        return _not_started(root.branches, program[0])


def _init(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
          shell: bool, ids: str, kept: Optional[Kept]) -> int:
    """PID 1 of the instance: mount, run bubblewrap, unwind."""
    namespaces.die_with_parent(_signal.SIGKILL)
    namespaces.mount_proc()
    children: List[int] = []

    def forward(signum: int, _frame: object) -> None:
        process.kill(children, signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    with Stack() as stack:
        lowers = list(kept.lowers) if kept else mount_all(stack, cfg.layers, cfg.paths, env,
                                                            cfg.debug)
        for d in lowers:
            debug(cfg.debug, f"Overlay layer '{d}'", "I")
        _scope(cfg, env)
        code = _attempt(cfg, cfg.backend, lowers, program, as_root, env, shell, ids, children,
                        kept)
        if code == _REFUSED:
            sys.stderr.write("ERROR: Bwrap failed SYS_mount, retrying with unionfs-fuse...\n")
            sys.stderr.flush()
            debug(cfg.debug, f"Overlay type: {overlays.FALLBACK.debug_name}")
            code = _attempt(cfg, overlays.FALLBACK, lowers, program, as_root, env, shell, ids,
                            children, kept)
        return code


def _run_init(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
              shell: bool, ids: str, kept: Optional[Kept]) -> int:
    try:
        return _init(cfg, program, as_root, env, shell, ids, kept)
    except FimError as e:
        error(e.message)
        return e.code
    except OSError as e:
        error(os_failure(e))
        return 1
    except BaseException as e:  # noqa: BLE001 - the init must never show a traceback
        error(f"Internal error: {type(e).__name__}: {e}")
        return 1


def _report(cfg: Config) -> None:
    if cfg.torn_bytes:
        warn(f"Ignoring an incomplete last layer ({cfg.torn_bytes} bytes); "
             "the next layer appended will replace it")
    if cfg.debug:
        for problem in cfg.problems:
            warn(f"{problem}; using its default")
    if cfg.casefold_fallback and cfg.debug:
        warn("casefold cannot be used with bwrap overlayfs, falling back to unionfs")
    if cfg.paths.data_why:
        debug(cfg.debug, f"Data directory: {cfg.paths.dir_data} ({cfg.paths.data_why})")
    debug(cfg.debug, f"Overlay type: {cfg.backend.debug_name}")


def _report_refusal(cfg: Config, refusal: hostcheck.Refused) -> None:
    """FIM_DEBUG: the evidence behind a refusal of the namespaces."""
    if cfg.debug:
        for line in refusal.evidence.lines():
            debug(True, f"Host: {line}")
        debug(True, f"Refused: {refusal.failure.describe()}")


def _refusal(cfg: Config) -> Optional[hostcheck.Refused]:
    """Before anything is made: whether the host refuses the instance's namespaces.
    Probed where the host's evidence allows a refusal, always when a fallback is on."""
    ev = cfg.host or hostcheck.evidence()
    refusal = hostcheck.check(ev, cfg.uid, cfg.gid, always=bool(cfg.fallback))
    if refusal is not None:
        _report_refusal(cfg, refusal)
    return refusal


def run(cfg: Config, program: Sequence[str], as_root: bool, env: Mapping[str, str],
        shell: bool = False) -> int:
    """Run `program` (after the container's shell when `shell`); its exit code."""
    with Stack() as stack:  # the launcher's own: the portal's dispatcher
        return _run(stack, cfg, program, as_root, env, shell)


def _run(stack: Stack, cfg: Config, program: Sequence[str], as_root: bool,
         env: Mapping[str, str], shell: bool) -> int:
    _report(cfg)
    paths = cfg.paths
    # Damaged layers are refused before anything is mounted or a kept mount reused.
    verify.before_mount(cfg.layers, paths)
    if cfg.backend.tool:
        # Checked before anything is mounted.
        tools.require(paths.dir_runtime, cfg.backend.tool, env,
                      f"for the {cfg.backend.name} overlay", overlays.alternatives(cfg.backend))
    refusal = _refusal(cfg)
    if refusal is not None:
        if not cfg.fallback:
            raise refusal
        from fim.runtime import fallback

        return fallback.run(cfg, program, as_root, env, shell)
    for d in (paths.dir_upper, paths.dir_work, paths.dir_logs):
        os.makedirs(d, exist_ok=True)
    for sig in _TERMINAL:
        _signal.signal(sig, lambda *_: None)
    if PERMISSIONS.has(cfg.permissions, "portal"):
        from fim.runtime import portal

        # Here, before any namespace: its calls run on the host as the caller.
        portal.start(stack, paths, env, cfg.exit_grace)
    kept = None
    from fim.runtime import keeper

    if cfg.keep > 0:
        kept = keeper.join(cfg, as_root, env)
    else:
        # Keeping is off: an idle keeper of the image ends rather than hold on to the
        # upper dir (its claim would refuse this run another backend's form).
        keeper.retire(cfg.paths)
    if kept is not None:
        ids = kept.ids
    else:
        try:
            ids = idmap.enter(cfg.uid, cfg.gid, as_root, paths.ids_mark, env,
                              paths.log("newuidmap"))
        except hostcheck.Refused as e:
            # Refused where the evidence did not announce it: nothing of this run stays.
            _report_refusal(cfg, e)
            instance.finish(paths)
            raise
    debug(cfg.debug, f"Ids mapped: {ids}")
    init = process.fork(lambda: _run_init(cfg, program, as_root, env, shell, ids, kept))

    def forward(signum: int, _frame: object) -> None:
        process.kill([init], signum)

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    instance.register(paths, init)
    code = process.wait(init)
    stack.close()  # the portal's dispatcher, before its directory goes
    instance.finish(paths)
    return code

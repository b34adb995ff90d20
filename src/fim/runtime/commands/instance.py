"""fim-instance list | exec ID PROGRAM [ARGS...]: the running instances of this image."""

from __future__ import annotations

import os

from fim.runtime import instance, namespaces
from fim.runtime.commands import Context
from fim.runtime.errors import EXIT_NOT_FOUND, FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _children(pid: int) -> List[int]:
    return [int(x) for x in _read(f"/proc/{pid}/task/{pid}/children").split()]


def running(ctx: Context) -> List[Tuple[int, int]]:
    """(launcher pid, init pid) of each running instance of this image, oldest first."""
    paths = instance.paths(ctx.image, ctx.dir_global, ctx.header.build_id, os.getpid())
    found = []
    try:
        names = os.listdir(paths.dir_instance_root)
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        base = os.path.join(paths.dir_instance_root, name)
        init = _read(os.path.join(base, "init"))
        if _read(os.path.join(base, "image")) != ctx.image or not init.isdigit():
            continue
        if os.path.exists(f"/proc/{name}") and os.path.exists(f"/proc/{init}"):
            found.append((int(name), int(init)))
    return sorted(found)


def _sandbox_of(init: int) -> Optional[int]:
    """The first process inside bubblewrap's namespaces, below the instance's init."""
    for child in _children(init):
        # bwrap runs directly or through the embedded loader: look at its first words.
        words = _read(f"/proc/{child}/cmdline").split("\0")[:4]
        if any(os.path.basename(w) == "bwrap" for w in words):
            inside = _children(child)
            if inside:
                return inside[0]
    return None


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-instance' (list,exec)")
    op, rest = args[0], args[1:]
    if op == "list":
        if rest:
            raise trailing("fim-instance", rest)
        for i, (pid, _init) in enumerate(running(ctx)):
            print(f"{i}:{pid}")
        return 0
    if op == "exec":
        if len(rest) < 2:
            raise FimError("Incorrect number of arguments for 'exec' (<id> <program> [args...])")
        instances = running(ctx)
        if not rest[0].isdigit() or int(rest[0]) >= len(instances):
            raise FimError(f"No running instance with id '{rest[0]}' (see fim-instance list)")
        init = instances[int(rest[0])][1]
        target = _sandbox_of(init)
        if target is None:
            raise FimError(f"Instance '{rest[0]}' is not running a program yet")
        return _exec_in(target, init, rest[1:])
    raise FimError(f"Invalid op '{op}' for 'fim-instance' (list,exec)")


def _exec_in(target: int, init: int, program: List[str]) -> int:
    raw = b""
    try:
        with open(f"/proc/{target}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        pass
    env = dict(e.decode(errors="replace").partition("=")[::2] for e in raw.split(b"\0") if e)
    # Past the chroot the host's standard library is out of reach: import now what
    # os.execvpe imports lazily.
    import warnings  # noqa: F401

    try:
        namespaces.join(target, init)
    except OSError as e:
        raise FimError(f"Cannot enter the instance: {e.strerror}", 1) from None
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(env.get("HOME", "/"))
        except OSError:
            os.chdir("/")
        try:
            os.execvpe(program[0], program, env)
        except OSError as e:
            os.write(2, f"E::Cannot run '{program[0]}' in the instance: {e.strerror}\n".encode())
            os._exit(EXIT_NOT_FOUND if isinstance(e, FileNotFoundError) else 126)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)

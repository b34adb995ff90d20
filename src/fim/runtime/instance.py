"""One running instance: its records, its directories' life cycle, finding and joining it.

An instance is its launcher process (the pid in its directories' names) and the
init it forked into new namespaces. `instance/{PID}/image` and `init` record
which image it runs and where its init is, for `fim-instance`.
"""

from __future__ import annotations

import os
import stat

from fim.runtime import namespaces, process
from fim.runtime.errors import EXIT_NOT_FOUND, FimError
from fim.runtime.files import remove_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

    from fim.runtime.paths import Paths


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def register(paths: Paths, init: int, keeper: bool = False) -> None:
    """Record the running instance (or the image's keeper): its image and its init."""
    os.makedirs(paths.dir_instance, exist_ok=True)
    _write(os.path.join(paths.dir_instance, "image"), paths.image)
    if keeper:
        _write(os.path.join(paths.dir_instance, "keeper"), "")
    _write(os.path.join(paths.dir_instance, "init"), str(init))


def finish(paths: Paths) -> None:
    """Remove the instance's directories, and those of instances that were killed."""
    remove_tree(paths.dir_work)
    remove_tree(paths.dir_instance)
    sweep(paths.dir_work_root, paths.pid)
    sweep(paths.dir_instance_root, paths.pid)
    for directory in (paths.dir_app, paths.dir_tmp, paths.dir_markers):
        sweep_partials(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(parent: str, keep: int) -> None:
    """Remove per-instance directories left by instances that were killed."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if name.isdigit() and int(name) != keep and not _alive(int(name)):
            path = os.path.join(parent, name)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    remove_tree(path)
            except OSError:
                continue


def _writer(name: str) -> Optional[int]:
    """The pid in the name of a file being written: `runtime.PID` (an extraction, see
    bootstrap.py), `.NAME.PID[-TOKEN].partial` (files.beside, a commit's layer)."""
    if name.startswith("runtime."):
        digits = name[len("runtime."):]
    elif name.startswith(".") and name.endswith(".partial"):
        digits = name[:-len(".partial")].rsplit(".", 1)[-1].split("-", 1)[0]
    else:
        return None
    return int(digits) if digits.isdigit() else None


def sweep_partials(directory: str) -> None:
    """Remove what killed writers left half written in `directory`: their names carry
    the writer's pid, and a writer that is gone will never finish them."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = _writer(name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        path = os.path.join(directory, name)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                remove_tree(path)
            else:
                os.unlink(path)
        except OSError:
            continue


def running(paths: Paths, keepers: bool = False) -> List[Tuple[int, int]]:
    """(launcher pid, init pid) of each running instance of this image, oldest first;
    with `keepers`, of its keepers instead (keeper/)."""
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
        if _read(os.path.join(base, "image")) != paths.image or not init.isdigit():
            continue
        if os.path.exists(os.path.join(base, "keeper")) != keepers:
            continue
        if os.path.exists(f"/proc/{name}") and os.path.exists(f"/proc/{init}"):
            found.append((int(name), int(init)))
    return sorted(found)


def _children(pid: int) -> List[int]:
    return [int(x) for x in _read(f"/proc/{pid}/task/{pid}/children").split()]


def sandbox_of(init: int) -> Optional[int]:
    """The first process inside bubblewrap's namespaces, below the instance's init (and
    the sandbox's own init, reaper.py)."""
    level = _children(init)
    for _ in range(2):  # init -> the sandbox's init -> bubblewrap
        below: List[int] = []
        for child in level:
            # bwrap runs directly or through the embedded loader: look at its first words.
            words = _read(f"/proc/{child}/cmdline").split("\0")[:4]
            if any(os.path.basename(w) == "bwrap" for w in words):
                inside = _children(child)
                return inside[0] if inside else None
            below += _children(child)
        level = below
    return None


def exec_in(target: int, init: int, program: List[str], scope: bool = False) -> int:
    """Run `program` in the namespaces and root of process `target` (a process of the
    sandbox, below `init`), with its environment; its exit code. With `scope`, the
    host's abstract sockets are kept out of its reach as they are of the sandbox's
    (landlock.py: joining namespaces does not join a Landlock domain)."""
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

    def child() -> int:
        if scope:
            from fim.runtime import landlock

            landlock.scope_abstract_sockets()
        try:
            os.chdir(env.get("HOME", "/"))
        except OSError:
            os.chdir("/")
        try:
            os.execvpe(program[0], program, env)
        except OSError as e:
            os.write(2, f"E::Cannot run '{program[0]}' in the instance: {e.strerror}\n".encode())
            return EXIT_NOT_FOUND if isinstance(e, FileNotFoundError) else 126
        return 1

    return process.wait(process.fork(child))

"""Directories of an image and of one running instance, and their life cycle.

Host side, next to the image: `.{NAME}.data/` with `data/` (overlay upper),
`work/{PID}/` (overlay work dir of one instance), `layers/` (managed layers),
`casefold/`, `tmp/`. Runtime side: `{global}/app/{BUILD_ID}/runtime/`
(extracted runtime and tools) and `instance/{PID}/` with `layers/{N}/`,
`mount/` and `logs/`.
"""

from __future__ import annotations

import os
import stat

from fim.runtime.record import dataclass


@dataclass(frozen=True)
class Paths:
    image: str
    dir_self: str
    dir_global: str
    dir_app: str
    dir_runtime: str
    dir_data: str
    dir_upper: str
    dir_work_root: str
    dir_layers: str
    dir_instance_root: str
    pid: int

    @property
    def dir_instance(self) -> str:
        return os.path.join(self.dir_instance_root, str(self.pid))

    @property
    def dir_work(self) -> str:
        return os.path.join(self.dir_work_root, str(self.pid))

    @property
    def dir_mount(self) -> str:
        return os.path.join(self.dir_instance, "mount")

    @property
    def dir_logs(self) -> str:
        return os.path.join(self.dir_instance, "logs")

    def layer_mountpoint(self, index: int) -> str:
        return os.path.join(self.dir_instance, "layers", str(index))


def paths(image: str, dir_global: str, build_id: str, pid: int) -> Paths:
    dir_self, name = os.path.split(image)
    dir_data = os.path.join(dir_self, f".{name}.data")
    dir_app = os.path.join(dir_global, "app", build_id)
    return Paths(
        image=image,
        dir_self=dir_self,
        dir_global=dir_global,
        dir_app=dir_app,
        dir_runtime=os.path.join(dir_app, "runtime"),
        dir_data=dir_data,
        dir_upper=os.path.join(dir_data, "data"),
        dir_work_root=os.path.join(dir_data, "work"),
        dir_layers=os.path.join(dir_data, "layers"),
        dir_instance_root=os.path.join(dir_app, "instance"),
        pid=pid,
    )


def remove_tree(path: str) -> None:
    """Remove a directory tree we own, making mode-000 dirs (overlay work dirs) writable."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except PermissionError:
        os.chmod(path, 0o700)
        entries = list(os.scandir(path))
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


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

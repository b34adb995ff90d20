"""Where everything of an image and of one instance lives: one value, derived paths.

Host side, next to the image (`FIM_DIR_DATA`, `.{NAME}.data/`): `data/` (the
overlay's upper dir), `work/{PID}/` (one instance's overlay work dir),
`layers/` (managed layers), `casefold/`, `tmp/`, `overlay.state`. Runtime side
(`{global}/app/{BUILD_ID}/`): `runtime/` (the extracted runtime and tools),
`markers/` (cached scans of layers), `instance/{PID}/` with `layers/{N}/`,
`mount/` and `logs/`.
"""

from __future__ import annotations

import os

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional, Tuple

_join = os.path.join


@dataclass(frozen=True)
class Paths:
    image: str  # absolute, symlinks resolved
    dir_global: str  # /tmp/fim, or the caller's own when another user owns it
    build_id: str
    pid: int  # of the instance: the launcher process
    dir_data: str
    # Why dir_data is not `.NAME.data` next to the image (for FIM_DEBUG), "" when it is.
    data_why: str = ""

    @property
    def dir_self(self) -> str:
        return os.path.dirname(self.image)

    @property
    def dir_app(self) -> str:
        return _join(self.dir_global, "app", self.build_id)

    @property
    def dir_runtime(self) -> str:
        return _join(self.dir_app, "runtime")

    @property
    def dir_markers(self) -> str:
        return _join(self.dir_app, "markers")

    @property
    def dir_upper(self) -> str:
        return _join(self.dir_data, "data")

    @property
    def dir_work_root(self) -> str:
        return _join(self.dir_data, "work")

    @property
    def dir_work(self) -> str:
        return _join(self.dir_data, "work", str(self.pid))

    @property
    def dir_layers(self) -> str:
        return _join(self.dir_data, "layers")

    @property
    def dir_casefold(self) -> str:
        return _join(self.dir_data, "casefold")

    @property
    def dir_tmp(self) -> str:
        return _join(self.dir_data, "tmp")

    @property
    def state_file(self) -> str:
        """The upper dir's recorded form, and its lock (overlays/upperdir.py)."""
        return _join(self.dir_data, "overlay.state")

    @property
    def ids_mark(self) -> str:
        """Present while the upper dir holds files of subordinate ids (idmap.py)."""
        return _join(self.dir_data, "ids")

    @property
    def dir_instance_root(self) -> str:
        return _join(self.dir_app, "instance")

    @property
    def dir_instance(self) -> str:
        return _join(self.dir_app, "instance", str(self.pid))

    @property
    def dir_mount(self) -> str:
        return _join(self.dir_instance, "mount")

    @property
    def dir_logs(self) -> str:
        return _join(self.dir_instance, "logs")

    def log(self, tool: str) -> str:
        return _join(self.dir_instance, "logs", f"{tool}.log")

    def layer_mountpoint(self, index: int) -> str:
        return _join(self.dir_instance, "layers", str(index))

    def fim_vars(self) -> Dict[str, str]:
        """The FIM_DIR_* variables the container sees."""
        return {
            "FIM_BIN_SELF": self.image,
            "FIM_DIR_SELF": self.dir_self,
            "FIM_DIR_GLOBAL": self.dir_global,
            "FIM_DIR_APP": self.dir_app,
            "FIM_DIR_INSTANCE": self.dir_instance,
            "FIM_DIR_DATA": self.dir_data,
            "FIM_DIR_LAYERS": self.dir_layers,
        }


def data_dir(image: str, environ: Mapping[str, str]) -> Tuple[str, str]:
    """The image's data directory, and why it is not the default one.

    `FIM_DIR_DATA` wins (FlatImage's variable). Else `.NAME.data` next to the image,
    when it exists and we may write it, or it does not exist and we may make it there.
    An image the user cannot write next to (installed by root under /opt, on a CD or a
    read-only mount) gets a data directory of its own per user and per image path:
    `$XDG_DATA_HOME/fim/NAME-HASH` (HASH: 12 hex digits of SHA-256 of the path)."""
    given = environ.get("FIM_DIR_DATA", "")
    if given:
        return os.path.abspath(given), "FIM_DIR_DATA"
    dir_self, name = os.path.split(image)
    beside = _join(dir_self, f".{name}.data")
    if os.access(beside if os.path.isdir(beside) else dir_self, os.W_OK | os.X_OK):
        return beside, ""
    import hashlib

    home = environ.get("HOME") or os.path.expanduser("~")
    share = environ.get("XDG_DATA_HOME") or _join(home, ".local", "share")
    digest = hashlib.sha256(image.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return _join(share, "fim", f"{name}-{digest}"), f"'{beside}' is not writable"


def of(image: str, dir_global: str, build_id: str, pid: int,
       environ: Optional[Mapping[str, str]] = None) -> Paths:
    data, why = data_dir(image, {} if environ is None else environ)
    return Paths(image, dir_global, build_id, pid, data, why)

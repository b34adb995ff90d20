"""FlatImage's variables inside the container, where fim has a meaning for them.

Set: FIM_VERSION (fim's version), FIM_DIST (the image's distribution: its
/etc/os-release ID in capitals, DEBIAN, BUSYBOX; UNKNOWN without one),
FIM_TIMESTAMP (when the image was built, YYYYMMDDHHMMSS, UTC), FIM_PID (the
instance: its launcher's pid, as fim-instance lists it), FIM_OFFSET (where the
first embedded layer starts in the image file), FIM_DIR_APP_BIN (the embedded
tools), and the directory variables of paths.fim_vars(). Absent, for want of a
meaning in fim: FIM_COMMIT (fim records no source commit in an image),
FIM_DIR_APP_SBIN, FIM_DIR_RUNTIME and FIM_DIR_RUNTIME_HOST (fim does not bind the
host's root into the container). docs/configuration.md lists them.
"""

from __future__ import annotations

import os

from fim.runtime import VERSION, rootview

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Sequence

    from fim.runtime.config import Config


def dist(branches: Sequence[str]) -> str:
    """The ID of the container's /etc/os-release, in capitals."""
    text = rootview.read_text(branches, "/etc/os-release") or \
        rootview.read_text(branches, "/usr/lib/os-release") or ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ID":
            value = value.strip().strip("\"'")
            if value:
                return value.upper()
    return "UNKNOWN"


def timestamp(runtime: str) -> Optional[str]:
    """The build time recorded in the runtime's build.json, as YYYYMMDDHHMMSS. Read
    without the json module: importing it (re, enum) costs milliseconds of every
    start, and the builder writes the field as `"built": "2026-12-03T11:44:24Z"`."""
    try:
        with open(os.path.join(runtime, "build.json"), encoding="utf-8") as f:
            text = f.read(65536)
    except OSError:
        return None
    _, found, rest = text.partition('"built": "')
    digits = "".join(c for c in rest.partition('"')[0] if c.isdigit()) if found else ""
    return digits[:14] if len(digits) >= 14 else None


def values(cfg: Config, branches: Sequence[str]) -> Dict[str, str]:
    paths = cfg.paths
    out = dict(paths.fim_vars())
    out.update(
        FIM_VERSION="v" + VERSION,  # FlatImage's form, as fim-version short prints it
        FIM_DIST=dist(branches),
        FIM_PID=str(paths.pid),
        FIM_DIR_APP_BIN=os.path.join(paths.dir_runtime, "tools", "bin"),
    )
    embedded = [layer for layer in cfg.layers if layer.embedded]
    if embedded:
        out["FIM_OFFSET"] = str(embedded[0].offset)
    built = timestamp(paths.dir_runtime)
    if built is not None:
        out["FIM_TIMESTAMP"] = built
    return out

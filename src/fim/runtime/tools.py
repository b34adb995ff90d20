"""Where the native tools come from: the copy embedded in the image, else the host's PATH."""

from __future__ import annotations

import os

from fim.runtime.errors import FimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional

# Tools the runtime may run, with the package that provides them on Debian.
PACKAGES = {
    "bwrap": "bubblewrap (0.10 or newer)",
    "squashfuse": "squashfuse",
    "mksquashfs": "squashfs-tools",
    "fuse-overlayfs": "fuse-overlayfs",
    "unionfs": "unionfs-fuse",
    "dwarfs": "dwarfs",
    "mkdwarfs": "dwarfs",
    "fusermount3": "fuse3",
}

# Directory of the extracted runtime that holds embedded tools.
EMBEDDED_DIR = "tools/bin"

# Host directories searched after PATH: sbin is often not on a user's PATH.
_EXTRA = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def embedded(runtime_dir: str, name: str) -> Optional[str]:
    path = os.path.join(runtime_dir, EMBEDDED_DIR, name)
    return path if os.access(path, os.X_OK) else None


def on_host(name: str, environ: Mapping[str, str]) -> Optional[str]:
    dirs = environ.get("PATH", "/usr/bin:/bin").split(":") + list(_EXTRA)
    for d in dirs:
        path = os.path.join(d or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def find(runtime_dir: str, name: str, environ: Mapping[str, str]) -> Optional[str]:
    return embedded(runtime_dir, name) or on_host(name, environ)


def require(runtime_dir: str, name: str, environ: Mapping[str, str], why: str,
            alternatives: str = "") -> str:
    path = find(runtime_dir, name, environ)
    if path is None:
        package = PACKAGES.get(name, name)
        hint = f", {alternatives}" if alternatives else ""
        raise FimError(f"'{name}' is required {why} but was not found; install {package}{hint}")
    return path

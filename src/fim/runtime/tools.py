"""Where the native tools come from: the copy embedded in the image, else the host's PATH."""

from __future__ import annotations

import os

from fim.runtime.errors import FimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional

# Tools the runtime may run, with the package that provides them on Debian.
PACKAGES = {
    "bwrap": "bubblewrap (0.10 or newer)",
    "squashfuse": "squashfuse",
    "squashfuse_ll": "squashfuse",
    "mksquashfs": "squashfs-tools",
    "fuse-overlayfs": "fuse-overlayfs",
    "unionfs": "unionfs-fuse",
    "dwarfs": "dwarfs",
    "mkdwarfs": "dwarfs",
    "fusermount3": "fuse3",
}

# Directories of the extracted runtime that hold embedded tools, the shared
# libraries they load, and the dynamic loader that runs them (`ld.so`).
EMBEDDED_DIR = "tools/bin"
EMBEDDED_LIB = "tools/lib"
LOADER = "ld.so"

# Host directories searched after PATH: sbin is often not on a user's PATH.
_EXTRA = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def embedded(runtime_dir: str, name: str) -> Optional[List[str]]:
    """Command prefix of an embedded tool: through the bundled loader and libraries
    when the image carries them, so the host's libraries play no part."""
    path = os.path.join(runtime_dir, EMBEDDED_DIR, name)
    if not os.path.isfile(path):
        return None
    lib = os.path.join(runtime_dir, EMBEDDED_LIB)
    loader = os.path.join(lib, LOADER)
    if os.path.isfile(loader):
        return [loader, "--library-path", lib, path]
    return [path]


def on_host(name: str, environ: Mapping[str, str]) -> Optional[str]:
    dirs = environ.get("PATH", "/usr/bin:/bin").split(":") + list(_EXTRA)
    for d in dirs:
        path = os.path.join(d or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def find(runtime_dir: str, name: str, environ: Mapping[str, str]) -> Optional[List[str]]:
    """Command prefix for a tool: the image's copy, else the host's."""
    command = embedded(runtime_dir, name)
    if command is not None:
        return command
    host = on_host(name, environ)
    return [host] if host is not None else None


def require(runtime_dir: str, name: str, environ: Mapping[str, str], why: str,
            alternatives: str = "") -> List[str]:
    path = find(runtime_dir, name, environ)
    if path is None:
        package = PACKAGES.get(name, name)
        hint = f", {alternatives}" if alternatives else ""
        raise FimError(f"'{name}' is required {why} but was not found; install {package}{hint}")
    return path

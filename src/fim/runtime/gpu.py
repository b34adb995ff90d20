"""The host's NVIDIA userspace driver, for the `gpu` permission.

Mesa needs only /dev/dri: its drivers are in the image. NVIDIA's proprietary
driver is split: the kernel module on the host and userspace libraries that
must match its version exactly, which no image can carry for every host. So,
as FlatImage, Conty and Steam's runtime do, the host's own files are brought
in: every library, program and loader manifest whose name is NVIDIA's (the
names its installer and distributions' packages use), of the version the
loaded module reports, read-only.

They are bound into a tmpfs at HOST_DIR, not over the image's own files (no
mount point is created in the image's tree, nothing is left in the upper
dir); the loaders are pointed at it: LD_LIBRARY_PATH (after the image's own
paths, the names do not collide with Mesa's), XDG_DATA_DIRS for Vulkan's ICD
manifests, __EGL_VENDOR_LIBRARY_DIRS for libglvnd's EGL vendors (GLX vendors
are found by library name).
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple

HOST_DIR = "/run/host-gpu"

# Where distributions and NVIDIA's installer put the libraries (Debian and
# Ubuntu, Fedora and openSUSE, Arch). They go to lib/ or lib32/ by their ELF
# class, not by where they were: /usr/lib is 64-bit on Arch, 32-bit on Fedora.
# The loader would skip a library of the wrong class, but two files of one name
# cannot share a directory.
LIBRARY_DIRS = (
    "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib",
    "usr/lib/i386-linux-gnu", "usr/lib32",
)
PROGRAM_DIRS = (("usr/bin", "bin"),)
MANIFEST_DIRS = (
    ("usr/share/vulkan/icd.d", "share/vulkan/icd.d"),
    ("etc/vulkan/icd.d", "share/vulkan/icd.d"),
    ("usr/share/vulkan/implicit_layer.d", "share/vulkan/implicit_layer.d"),
    ("etc/vulkan/implicit_layer.d", "share/vulkan/implicit_layer.d"),
    ("usr/share/glvnd/egl_vendor.d", "share/glvnd/egl_vendor.d"),
    ("etc/glvnd/egl_vendor.d", "share/glvnd/egl_vendor.d"),
)
# NVIDIA's libraries: libnvidia-*, libGLX_nvidia, libEGL_nvidia, libcuda,
# libnvcuvid, libnvoptix, libnvidia-ml, ... Not egl-wayland/gbm/x11: those are
# ordinary distribution packages the image may carry itself.
_LIBRARY = re.compile(r"^lib(nvidia-|GLX_nvidia|EGL_nvidia|GLESv[12]_nvidia|cuda|nvcuvid|"
                      r"nvoptix|nvidia)[^/]*\.so(\.|$)")
_EXCLUDED = re.compile(r"egl-wayland|egl-gbm|egl-xcb|egl-xlib|libnvidia-egl-x11")
_PROGRAM = re.compile(r"^nvidia-(smi|debugdump|cuda-mps-control|cuda-mps-server)$")
_VERSIONED = re.compile(r"\.so\.(\d+\.\d+(?:\.\d+)?)$")


def driver_version(host: str = "/") -> Optional[str]:
    """The loaded NVIDIA kernel module's version (`550.54.14`), if any."""
    try:
        with open(os.path.join(host, "sys/module/nvidia/version"), encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _matches(directory: str, pattern: re.Pattern, version: Optional[str]) -> List[str]:
    """Names in `directory` matching `pattern` whose file, when its name carries a
    driver version, carries the loaded one (leftovers of an older driver stay out)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    chosen = []
    for name in names:
        if not pattern.search(name) or _EXCLUDED.search(name):
            continue
        path = os.path.join(directory, name)
        real = os.path.realpath(path)
        if not os.path.isfile(real):
            continue  # a directory or a dangling link
        found = _VERSIONED.search(os.path.basename(real))
        if version and found and found.group(1) != version:
            continue
        chosen.append(name)
    return chosen


def _elf_dir(path: str) -> Optional[str]:
    """lib or lib32 by the ELF class of `path`; None if it is not an ELF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(5)
    except OSError:
        return None
    if head[:4] != b"\x7fELF":
        return None
    return "lib32" if head[4] == 1 else "lib"


def nvidia(host: str = "/") -> Tuple[List[Tuple[str, ...]], Dict[str, str]]:
    """bubblewrap options binding the host's NVIDIA userspace under HOST_DIR, and the
    loader variables to add after the container's own; nothing when the host has none."""
    version = driver_version(host)
    binds: Dict[str, str] = {}  # destination -> host source
    for source_dir in LIBRARY_DIRS:
        directory = os.path.join(host, source_dir)
        for name in _matches(directory, _LIBRARY, version):
            real = os.path.realpath(os.path.join(directory, name))
            dest_dir = _elf_dir(real)
            if dest_dir is not None:
                binds.setdefault(f"{HOST_DIR}/{dest_dir}/{name}", real)
    for dirs, pattern in ((PROGRAM_DIRS, _PROGRAM), (MANIFEST_DIRS, re.compile(r"nvidia"))):
        for source_dir, dest_dir in dirs:
            directory = os.path.join(host, source_dir)
            for name in _matches(directory, pattern, version):
                binds.setdefault(f"{HOST_DIR}/{dest_dir}/{name}",
                                 os.path.realpath(os.path.join(directory, name)))
    if not binds:
        return [], {}
    options: List[Tuple[str, ...]] = [("--tmpfs", HOST_DIR)]
    options += [("--ro-bind", src, dst) for dst, src in sorted(binds.items())]
    return options, _loader_env(binds)


def _loader_env(binds: Mapping[str, str]) -> Dict[str, str]:
    """Search-path additions: variable -> directories."""
    present = {os.path.dirname(dst) for dst in binds}
    env: Dict[str, str] = {}
    libs = [f"{HOST_DIR}/{d}" for d in ("lib", "lib32") if f"{HOST_DIR}/{d}" in present]
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join(libs)
    if any(d.startswith(f"{HOST_DIR}/share/") for d in present):
        env["XDG_DATA_DIRS"] = f"{HOST_DIR}/share"
    if f"{HOST_DIR}/share/glvnd/egl_vendor.d" in present:
        env["__EGL_VENDOR_LIBRARY_DIRS"] = f"{HOST_DIR}/share/glvnd/egl_vendor.d"
    if f"{HOST_DIR}/bin" in present:
        env["PATH"] = f"{HOST_DIR}/bin"
    return env



# What a loader searches when its variable is unset: an addition goes after it.
DEFAULTS = {
    "XDG_DATA_DIRS": "/usr/local/share:/usr/share",
    "__EGL_VENDOR_LIBRARY_DIRS": "/etc/glvnd/egl_vendor.d:/usr/share/glvnd/egl_vendor.d",
}

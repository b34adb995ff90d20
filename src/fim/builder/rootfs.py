"""Root filesystems to build images from."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

from fim.runtime.errors import FimError

_DIRS = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
    "home": 0o755, "root": 0o700, "proc": 0o555, "sys": 0o555, "dev": 0o755,
    "run": 0o755, "tmp": 0o1777, "var/tmp": 0o1777, "mnt": 0o755, "opt": 0o755,
}


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", ident, 32)
        phentsize, phnum = struct.unpack_from("<HH", ident, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum)
    )


def find_busybox() -> str:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.isfile(candidate) and _is_static_elf(candidate):
            return candidate
    raise FimError("A statically linked busybox is required; install busybox-static")


def busybox(dest: Path) -> None:
    """A minimal root filesystem: busybox applets, passwd/group, the usual directories."""
    source = find_busybox()
    if dest.exists() and any(dest.iterdir()):
        raise FimError(f"Destination '{dest}' exists and is not empty")
    for rel, mode in _DIRS.items():
        (dest / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / rel, mode)
    shutil.copy2(source, dest / "bin/busybox")
    os.chmod(dest / "bin/busybox", 0o755)
    listing = subprocess.run(
        [source, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for rel in listing:
        link = dest / rel
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(dest / "bin/busybox", link.parent))
    version = subprocess.run([source], capture_output=True, text=True).stdout.split()[1:2]
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\nnogroup:x:65534:\n",
        "etc/os-release": 'NAME="fim busybox"\nID=busybox\n'
        f'VERSION_ID="{(version or ["unknown"])[0].lstrip("v")}"\n',
        "etc/hostname": "fim\n",
        "etc/profile": 'export PS1="[fim] \\w \\$ "\n',
    }
    for rel, text in files.items():
        (dest / rel).write_text(text)

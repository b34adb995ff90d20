"""Root filesystems to build images from."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

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


DEFAULT_MIRRORS = ("http://deb.debian.org/debian", "https://deb.debian.org/debian")
APT_SANDBOX = (
    "// Run by an ordinary user without subordinate ids, a fim container maps one\n"
    "// user id: apt cannot drop to _apt there.\n"
    'APT::Sandbox::User "root";\n'
)
# What `fim-layer commit` would otherwise carry into every layer: downloaded
# packages (deleted once installed), apt's binary caches (80 MB, rebuilt when
# apt runs) and translations, as Debian's own container images leave them out.
# The lists stay uncompressed: SquashFS's zstd packs them smaller than apt's
# own lz4 (docs/layers.md).
APT_SMALL = (
    'APT::Keep-Downloaded-Packages "false";\n'
    'Dir::Cache::pkgcache "";\n'
    'Dir::Cache::srcpkgcache "";\n'
    'Acquire::Languages "none";\n'
)


def host_mirror() -> Optional[str]:
    """The Debian archive the host's apt uses (not its security archive), if any."""
    candidates: List[str] = []
    sources = Path("/etc/apt/sources.list.d")
    files = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                candidates += line.split(":", 1)[1].split()
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            words = line.split()
            if words[:1] == ["deb"]:
                candidates += [w for w in words[1:] if "://" in w][:1]
    for uri in candidates:
        if "security" not in uri and "://" in uri:
            return uri
    return None


def debian(dest: Path, suite: str = "bookworm", include: Sequence[str] = (),
           mirror: Optional[str] = None) -> None:
    """A Debian root filesystem (minbase) from the Debian archive, ready for fim.

    mmdebstrap is preferred, debootstrap is the fallback. Afterwards apt is told
    not to drop to its `_apt` user, and files owned by other users than root are
    given to root: a container run by an ordinary user maps only that user (as
    root), so any other owner would show as `nobody` and be unwritable even for
    fim-root (apt's own `partial` directories are such files).
    """
    if dest.exists() and any(dest.iterdir()):
        raise FimError(f"Destination '{dest}' exists and is not empty")
    if mirror is None:
        found = host_mirror()
        # mmdebstrap adds the updates and security archives itself only when it
        # is given no mirror; the default archive needs no mention.
        if found and found.rstrip("/") not in DEFAULT_MIRRORS:
            mirror = found
    includes = [p for p in include if p]
    mmdebstrap, debootstrap = shutil.which("mmdebstrap"), shutil.which("debootstrap")
    if mmdebstrap:
        argv = [mmdebstrap, "--variant=minbase"]
        if includes:
            argv.append("--include=" + ",".join(includes))
        argv += [suite, str(dest)] + ([mirror] if mirror else [])
    elif debootstrap:
        if os.getuid() != 0:
            raise FimError("debootstrap needs root; install mmdebstrap to build as a user")
        argv = [debootstrap, "--variant=minbase"]
        if includes:
            argv.append("--include=" + ",".join(includes))
        argv += [suite, str(dest)] + ([mirror] if mirror else [])
    else:
        raise FimError("mmdebstrap or debootstrap is required; install mmdebstrap")
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise FimError(f"{os.path.basename(argv[0])} failed: {lines[-1] if lines else ''}")
    prepare_debian(dest)


def prepare_debian(root: Path) -> None:
    conf = root / "etc/apt/apt.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "99fim-sandbox").write_text(APT_SANDBOX)
    (conf / "99fim-small-layers").write_text(APT_SMALL)
    for path in [root] + list(root.rglob("*")):
        st = path.lstat()
        if st.st_uid != 0 or st.st_gid != 0:
            os.lchown(path, 0, 0)

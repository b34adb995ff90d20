"""Assemble an image: launcher, header, reserved space, journal, payload, layer 0."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from fim import __version__
from fim.builder import bundle, interpreter, payload
from fim.runtime.errors import FimError
from fim.runtime.image import chain
from fim.runtime.image.file import ImageFile, open_image
from fim.runtime.image.header import HEADER_BLOCK, LAUNCHER_SIZE, Header, align
from fim.runtime.image.reserved import JOURNAL_SIZE, RESERVED_SIZE
from fim.runtime.layers import DEFAULT_LEVEL, squashfs


def _bootstrap_code() -> str:
    """The bootstrap's source without comments or blank lines, for `python3 -c '...'`."""
    import fim.runtime

    source = (Path(fim.runtime.__file__).parent / "bootstrap.py").read_text()
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    code = "\n".join(lines)
    if "'" in code:
        raise RuntimeError("bootstrap.py must not contain a single quote")
    return code


def launcher(python_offset: int = 0, python_size: int = 0, build_id: str = "none") -> bytes:
    """The #!/bin/sh stub, with where the embedded interpreter lies (size 0: none)."""
    import fim.runtime

    template = (Path(fim.runtime.__file__).parent / "launcher.sh").read_text()
    text = (template.replace("@BOOTSTRAP@", _bootstrap_code())
            .replace("@PYOFFSET@", str(python_offset)).replace("@PYSIZE@", str(python_size))
            .replace("@BUILDID@", build_id)).encode()
    if len(text) > LAUNCHER_SIZE:
        raise RuntimeError(f"launcher is {len(text)} bytes, the format allows {LAUNCHER_SIZE}")
    return text.ljust(LAUNCHER_SIZE, b"\n")


def make_layer(source: Path, output: Path, level: int = DEFAULT_LEVEL) -> None:
    tool = shutil.which("mksquashfs") or "/usr/bin/mksquashfs"
    if not os.path.exists(tool):
        raise FimError("'mksquashfs' is required to build layers; install squashfs-tools")
    # A root filesystem of a GB compresses for minutes: on a terminal mksquashfs draws
    # its progress bar there (its stdout on our stderr); in a script it says nothing.
    progress = sys.stderr.isatty()
    argv = squashfs.create_argv([tool], str(source), str(output), level, progress)
    if os.getuid() != 0:
        # Files a packager owns without being root are root's inside the image.
        argv.append("-all-root")
    result = subprocess.run(argv, stdout=sys.stderr if progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        message = result.stderr.strip() or (result.stdout or "").strip()
        raise FimError(f"mksquashfs failed: {message}")


def _os_release(rootfs: Path) -> Dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (rootfs / rel).read_text(errors="replace")
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip('"')
        return fields
    return {}


def distribution_label(rootfs: Path) -> str:
    """PRETTY_NAME of the root filesystem's os-release, else its ID, else "unknown"."""
    fields = _os_release(rootfs)
    return fields.get("PRETTY_NAME") or fields.get("NAME") or fields.get("ID") or "unknown"


def distribution_id(rootfs: Path) -> str:
    """The os-release ID in capitals (FIM_DIST: DEBIAN, BUSYBOX), UNKNOWN without one:
    recipes are fetched for it without mounting the image."""
    return (_os_release(rootfs).get("ID") or "unknown").upper()


def default_shell(rootfs: Path) -> str:
    """The program an image started without a command runs: bash when the root has
    it, else sh (what `fim-boot show` prints when no boot command is set; a run looks
    again in the merged root). Links are not followed: /bin may point at /usr/bin."""
    has_bash = any(os.path.lexists(rootfs / d / "bash") for d in ("bin", "usr/bin"))
    return "bash" if has_bash else "sh"


def build(rootfs: Path, output: Path, name: Optional[str] = None,
          embed: str = "all", python: str = "embed",
          configure: Optional[Configure] = None, level: int = DEFAULT_LEVEL) -> Header:
    if not rootfs.is_dir():
        raise FimError(f"Root filesystem '{rootfs}' is not a directory")
    output = output.absolute()
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".fim-build-") as tmp:
        layer = Path(tmp) / "layer0.sqfs"
        make_layer(rootfs, layer, level)
        info = {"distribution": distribution_label(rootfs), "dist": distribution_id(rootfs),
                "shell": default_shell(rootfs)}
        return assemble(output, [layer], name, info, embed, python, configure)


Configure = Callable[[ImageFile], None]


def assemble(output: Path, layers: Sequence[Path], name: Optional[str], info: Dict[str, Any],
             embed: str = "all", python: str = "embed",
             configure: Optional[Configure] = None) -> Header:
    """The image at `output` with `layers` (oldest first), `info` in its build.json and
    its settings written by `configure`; made beside it and renamed once complete, so
    that a failure leaves no output file."""
    output = output.absolute()
    entries: List[payload.Entry] = payload.runtime_entries() + bundle.entries(embed)
    label = name or output.name
    build_id = hashlib.sha256(
        payload.pack(entries) + label.encode() + str(time.time_ns()).encode()
    ).hexdigest()[:16]
    described: Dict[str, Any] = {
        "name": label,
        "build_id": build_id,
        "distribution": "unknown",
        "dist": "UNKNOWN",
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "builder_version": __version__,
        # FlatImage's COMMIT: which runtime code this is (its files' digest).
        "commit": hashlib.sha256(payload.pack(payload.runtime_entries())).hexdigest()[:7],
    }
    described.update(info or {})
    entries.append(("build.json", 0o644, json.dumps(described, indent=2).encode()))
    blob = payload.pack(entries)
    reserved_offset = LAUNCHER_SIZE + HEADER_BLOCK
    journal_offset = align(reserved_offset + RESERVED_SIZE)
    # Between the journal and the payload: the interpreter for hosts without python3,
    # located by the launcher alone (the header's parts stay where they are).
    python_blob = interpreter.archive() if python == "embed" else b""
    python_offset = align(journal_offset + JOURNAL_SIZE)
    payload_offset = align(python_offset + len(python_blob))
    header = Header(
        reserved_offset=reserved_offset,
        reserved_size=RESERVED_SIZE,
        journal_offset=journal_offset,
        journal_size=JOURNAL_SIZE,
        payload_offset=payload_offset,
        payload_size=len(blob),
        chain_offset=align(payload_offset + len(blob)),
        build_id=build_id,
        # Checked by the bootstrap before it extracts the payload.
        payload_sha256=hashlib.sha256(blob).digest(),
    )
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".fim-image-") as tmp:
        staging = Path(tmp) / "image"
        with open(staging, "wb") as f:
            f.write(launcher(python_offset, len(python_blob), build_id))
            f.write(header.pack())
            f.seek(python_offset)
            f.write(python_blob)
            f.seek(payload_offset)
            f.write(blob)
            f.truncate(header.chain_offset)
        # Sealed with its digest, checked before every first mount after a change.
        for layer in layers:
            chain.append(str(staging), header, str(layer), seal=True)
        if configure is not None:
            image = open_image(str(staging))
            try:
                configure(image)
            finally:
                image.close()
        os.chmod(staging, 0o755)
        os.replace(staging, output)
    return header

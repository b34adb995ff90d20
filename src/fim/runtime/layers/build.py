"""Make a layer file from a directory; the numbering of managed layers."""

from __future__ import annotations

import os

from fim.runtime import files, process, tools
from fim.runtime.errors import FimError
from fim.runtime.image import digest
from fim.runtime.layers import squashfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Mapping, Optional

MAX_MANAGED = 999


def create(source: str, output: str, level: int, runtime_dir: str,
           environ: Mapping[str, str], log: str) -> None:
    """SquashFS (zstd) of `source` at `output`, sealed with its digest (image/digest.py)
    and fsynced. Deletion markers (0/0 devices, opaque xattrs), links, modes, owners
    and xattrs are kept as they are."""
    tool = tools.require(runtime_dir, squashfs.CREATE_TOOL, environ, "to create layers")
    # A commit of a large install compresses for minutes: on a terminal mksquashfs's
    # progress bar shows how far it is; in a script nothing but the log is written.
    progress = os.isatty(2)
    argv = squashfs.create_argv(tool, source, output, level, progress)
    if process.run(argv, environ, log, append=False, progress=progress) != 0:
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        failure = _os_failure(lines, output)
        if failure is not None:
            raise failure
        detail = f": {lines[-1]}" if lines else ""
        raise FimError(f"Could not create the layer{detail} (log: {log})", 1)
    digest.seal(output)
    files.fsync_path(output)


def _os_failure(lines: List[str], output: str) -> Optional[OSError]:
    """The OS error that stopped mksquashfs ("Write failed because No space left on
    device"), for the caller to report as any other; on a full disk its log (beside
    the layer) may be empty, so a filesystem without free space says it too."""
    import errno

    for line in lines:
        _, found, cause = line.partition(" because ")
        if found:
            codes = {os.strerror(code): code for code in errno.errorcode}
            if cause.strip() in codes:
                return OSError(codes[cause.strip()], cause.strip(), output)
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(output)))
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < _NEARLY_FULL:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output)
    return None


# Less free space than this after mksquashfs failed: it failed for want of space.
_NEARLY_FULL = 1 << 20


def managed_number(name: str) -> int:
    """N of `layer-NNN.layer`, -1 for any other name."""
    if len(name) == 15 and name.startswith("layer-") and name.endswith(".layer"):
        digits = name[6:9]
        if digits.isdigit():
            return int(digits)
    return -1


def next_managed(layers_dir: str) -> str:
    """The path of the next managed layer: one more than the highest existing, from 000."""
    try:
        names = os.listdir(layers_dir)
    except FileNotFoundError:
        names = []
    number = max([managed_number(n) for n in names] + [-1]) + 1
    if number > MAX_MANAGED:
        raise FimError("Maximum number of layers exceeded")
    return os.path.join(layers_dir, f"layer-{number:03d}.layer")

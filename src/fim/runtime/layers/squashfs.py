"""SquashFS layers: mounted with squashfuse straight out of the image, built with mksquashfs."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence


MAGIC = b"hsqs"
TOOL = "squashfuse"
CREATE_TOOL = "mksquashfs"


def mount_argv(tool: Sequence[str], path: str, offset: int, mountpoint: str) -> List[str]:
    return [*tool, "-o", f"offset={offset}", path, mountpoint]


def zstd_level(level: int) -> int:
    """FIM_COMPRESSION_LEVEL 0-9 onto zstd 1-19."""
    return 1 + 2 * level


def create_argv(tool: Sequence[str], source: str, output: str, level: int) -> List[str]:
    return [
        *tool, source, output,
        "-comp", "zstd", "-Xcompression-level", str(zstd_level(level)),
        "-b", "1M", "-noappend", "-quiet", "-no-progress",
    ]

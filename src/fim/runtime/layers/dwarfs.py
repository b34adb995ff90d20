"""DwarFS layers: mounted with the dwarfs FUSE driver where the host has it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence


MAGIC = b"DWARFS"
TOOL = "dwarfs"
TOOLS = (TOOL,)
CREATE_TOOL = "mkdwarfs"
# dwarfs before 0.11 reads its sections up to the end of the file (0.11 added
# `-o imagesize=`): bytes after them would break the mount, so fim adds no digest
# trailer to a DwarFS layer (it makes none itself: they come from mkdwarfs).
SEALS = False
HEAD = 0


def fs_size(head: bytes) -> Optional[int]:
    """DwarFS states no length fim could check before mounting."""
    return None


def mount_argv(tool: Sequence[str], path: str, offset: int, mountpoint: str) -> List[str]:
    return [*tool, path, mountpoint, "-o", f"offset={offset}"]


def create_argv(tool: Sequence[str], source: str, output: str, level: int,
                progress: bool = False) -> List[str]:
    return [*tool, "-i", source, "-o", output, "-l", str(min(level, 9)),
            *(() if progress else ("--no-progress",))]

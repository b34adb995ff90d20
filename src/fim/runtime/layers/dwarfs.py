"""DwarFS layers: mounted with the dwarfs FUSE driver where the host has it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence


MAGIC = b"DWARFS"
TOOL = "dwarfs"
TOOLS = (TOOL,)
CREATE_TOOL = "mkdwarfs"


def mount_argv(tool: Sequence[str], path: str, offset: int, mountpoint: str) -> List[str]:
    return [*tool, path, mountpoint, "-o", f"offset={offset}"]


def create_argv(tool: Sequence[str], source: str, output: str, level: int) -> List[str]:
    return [*tool, "-i", source, "-o", output, "-l", str(min(level, 9)), "--no-progress"]

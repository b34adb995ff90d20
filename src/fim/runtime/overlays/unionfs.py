"""The UNIONFS backend: unionfs-fuse in copy-on-write mode, mounted before bubblewrap."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence

TOOL = "unionfs"


def mount_argv(tool: str, lowers_top_first: Sequence[str], upper: str,
               mountpoint: str) -> List[str]:
    branches = [f"{upper}=RW"] + [f"{lower}=RO" for lower in lowers_top_first]
    # hide_meta_files: its .unionfs-fuse bookkeeping never shows in the container.
    return [tool, "-o", "cow,hide_meta_files", ":".join(branches), mountpoint]

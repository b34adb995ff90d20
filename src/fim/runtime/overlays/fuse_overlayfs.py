"""The OVERLAYFS backend: fuse-overlayfs, mounted before bubblewrap starts."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence

TOOL = "fuse-overlayfs"


def mount_argv(tool: Sequence[str], lowers_top_first: Sequence[str], upper: str, work: str,
               mountpoint: str) -> List[str]:
    # No squash_to_uid/gid: the instance's user namespace already maps the
    # caller to the owner of the layers' files (see docs/overlays.md).
    options = f"lowerdir={':'.join(lowers_top_first)},upperdir={upper},workdir={work}"
    return [*tool, "-o", options, mountpoint]

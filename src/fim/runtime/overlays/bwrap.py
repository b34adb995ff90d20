"""The native backend: kernel overlayfs mounted by bubblewrap itself.

Nothing is mounted before bubblewrap starts; the backend only contributes
arguments. bubblewrap >= 0.10 is required for --overlay-src/--overlay.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence



def bwrap_args(lowers_top_first: Sequence[str], upper: str, work: str) -> List[str]:
    args: List[str] = []
    # bubblewrap stacks --overlay-src in the order given, first = lowest.
    for lower in reversed(lowers_top_first):
        args += ["--overlay-src", lower]
    return args + ["--overlay", upper, work, "/"]

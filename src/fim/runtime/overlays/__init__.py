"""Overlay backends: their names, their reserved-space bits, and the choice between them."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional


BWRAP = "BWRAP"
OVERLAYFS = "OVERLAYFS"
UNIONFS = "UNIONFS"

# Bitmask stored at offset 9 of the reserved space (FlatImage's values).
BITS = {BWRAP: 1 << 1, OVERLAYFS: 1 << 2, UNIONFS: 1 << 3}
# Names accepted by `fim-overlay set` and FIM_OVERLAY.
NAMES = {"bwrap": BWRAP, "overlayfs": OVERLAYFS, "unionfs": UNIONFS}
# Names printed by FIM_DEBUG=1.
DEBUG_NAMES = {BWRAP: "BWRAP", OVERLAYFS: "FUSE_OVERLAYFS", UNIONFS: "UNIONFS_FUSE"}


def from_byte(value: int) -> Optional[str]:
    for name, bit in BITS.items():
        if value == bit:
            return name
    return None


def choose(environ: Mapping[str, str], stored: int) -> str:
    """FIM_OVERLAY (ignored when empty or invalid) > reserved byte > BWRAP."""
    from_env = NAMES.get(environ.get("FIM_OVERLAY", "").strip().lower())
    if from_env is not None:
        return from_env
    return from_byte(stored) or BWRAP

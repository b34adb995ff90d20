"""The stamp of what an integration was made from: compared at every start, so that
the installation work runs only when something it depends on changed.

It names the image's path and file identity (device, inode, size, modification
time: every settings write, layer append, move, copy or replacement changes one)
and the desktop settings. One line; "" when nothing is to be installed.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from fim.runtime.image.file import ImageFile
    from fim.runtime.image.settings import Desktop

# Changed when what the integration writes changes, so that images refresh.
FORMAT = "fim-desktop-1"


def of(image: ImageFile, desktop: Optional[Desktop]) -> str:
    if desktop is None or not desktop.integrations:
        return ""
    st = os.fstat(image.fd)
    text = (f"{FORMAT} {st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns} "
            f"{image.path!r} {desktop.name!r} {','.join(desktop.categories)!r} "
            f"{','.join(desktop.integrations)}")
    # One line, whatever the path holds.
    return text.replace("\n", "\\n")

"""One handle on an image file, opened once per run: its header, its settings, its chain.

Reads go through the descriptor opened by the bootstrap; writes (settings,
appended layers) open the file for writing each time, crash-safely
(reserved.py, chain.py).
"""

from __future__ import annotations

import os

from fim.runtime.errors import FimError
from fim.runtime.image import chain, reserved
from fim.runtime.image.chain import Chain, Element
from fim.runtime.image.header import HEADER_BLOCK, HEADER_OFFSET, Header, unpack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional


class ImageFile:
    __slots__ = ("path", "fd", "header")

    def __init__(self, path: str, fd: int, header: Header) -> None:
        self.path = path
        self.fd = fd
        self.header = header

    def read(self, codec: Any) -> Any:
        """The setting `codec` decodes; FimError if its region is damaged."""
        region = codec.region
        if codec.text:
            raw = reserved.read_prefix(self.fd, self.header, region)
        else:
            raw = reserved.read_region(self.fd, self.header, region)
        return codec.decode(raw)

    def read_or(self, codec: Any, problems: List[str]) -> Any:
        """The setting, or its default when its region is damaged (noted in `problems`)."""
        try:
            return self.read(codec)
        except FimError as e:
            problems.append(e.message)
            return codec.default()

    def write(self, codec: Any, value: Any) -> None:
        """Store a setting; what does not fit its region is refused, the old value kept."""
        reserved.write_region(self.path, self.header, codec.region, codec.encode(value))

    def check_writable(self) -> None:
        """Refuse, before any work, a change of the image file that cannot be written
        (read-only media, an image installed by another user)."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError as e:
            raise FimError(f"Cannot write image '{self.path}': {e.strerror}") from None

    def chain(self) -> Chain:
        return chain.scan(self.fd, self.header)

    def append(self, layer_path: str, seal: bool = False) -> Element:
        """Append a layer file on top (chain.append: checked against its digest, or
        given one when `seal`); a failure leaves the image as it was."""
        return chain.append(self.path, self.header, layer_path, seal)

    def close(self) -> None:
        os.close(self.fd)


def adopt(path: str, fd: int, header_block: Optional[bytes] = None) -> ImageFile:
    """The handle for `path` open at `fd`; the header is checked (one `E::` line when
    the file is not an image, is truncated or of another version)."""
    if header_block is None:
        header_block = os.pread(fd, HEADER_BLOCK, HEADER_OFFSET)
    header = unpack(header_block, path, os.fstat(fd).st_size)
    if header.reserved_size < reserved.RESERVED_SIZE or header.journal_size < reserved.JOURNAL_SIZE:
        # A setting written past a short region would land in the journal or the payload.
        raise FimError(f"'{path}' is damaged (its header gives the reserved space or its "
                       "journal less room than their regions need)")
    return ImageFile(path, fd, header)


def open_image(path: str) -> ImageFile:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise FimError(f"Cannot read image '{path}': {e.strerror}") from None
    try:
        return adopt(path, fd)
    except BaseException:
        os.close(fd)
        raise

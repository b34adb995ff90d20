"""The runtime's message vocabulary (E::, W::, D::, I::) and exit codes."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

EXIT_USAGE = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class FimError(Exception):
    """An error the user must see as one `E::` line; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def error(message: str) -> None:
    sys.stderr.write("E::" + message + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write("W::" + message + "\n")
    sys.stderr.flush()


def debug_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("FIM_DEBUG") == "1"


def debug(enabled: bool, message: str, prefix: str = "D") -> None:
    # Diagnostics go to stdout, as the contract says, and only on request.
    if enabled:
        sys.stdout.write(prefix + "::" + message + "\n")
        sys.stdout.flush()


def os_failure(e: OSError) -> str:
    """An OS error that reached the top (a full or read-only disk, a quota, EIO, a
    permission) as one line: its cause and the path, never a traceback. Paths that
    know what they were doing say more where they raise (FimError)."""
    cause = e.strerror or type(e).__name__
    if e.filename is None:
        return cause
    where = f"'{e.filename}'" + (f" -> '{e.filename2}'" if e.filename2 is not None else "")
    return f"{cause}: {where}"


def trailing(command: str, rest: list[str]) -> FimError:
    """The contract's message for extra arguments, e.g. `['a','b',]`."""
    listed = "".join(f"'{a}'," for a in rest)
    return FimError(f"Trailing arguments for {command}: [{listed}]")

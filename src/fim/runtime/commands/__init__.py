"""One module per fim-* command. Each parses its own arguments and returns an exit code;
none holds mount logic (they call the container pipeline)."""

from __future__ import annotations

from fim.runtime.image.header import Header
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping


@dataclass(frozen=True)
class Context:
    image: str
    header: Header
    dir_global: str
    environ: Mapping[str, str]


# command name -> (module under fim.runtime.commands, function)
COMMANDS = {
    "fim-exec": ("run", "fim_exec"),
    "fim-root": ("run", "fim_root"),
    "fim-overlay": ("overlay", "main"),
    "fim-layer": ("layer", "main"),
    "fim-casefold": ("casefold", "main"),
    "fim-perms": ("perms", "perms"),
    "fim-unshare": ("perms", "unshare"),
    "fim-bind": ("bind", "main"),
    "fim-env": ("env", "main"),
    "fim-boot": ("boot", "main"),
    "fim-instance": ("instance", "main"),
    "fim-version": ("version", "main"),
    "fim-help": ("help", "main"),
}

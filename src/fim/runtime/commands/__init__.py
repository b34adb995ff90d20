"""One module per fim-* command. Each parses its own arguments, calls the pipeline
that does the work, and returns an exit code; none holds mount logic."""

from __future__ import annotations

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

    from fim.runtime.image.file import ImageFile
    from fim.runtime.paths import Paths


@dataclass(frozen=True)
class Context:
    image: ImageFile  # opened once for the whole run
    paths: Paths
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
    "fim-remote": ("remote", "main"),
    "fim-recipe": ("recipe", "main"),
    "fim-desktop": ("desktop", "main"),
    "fim-notify": ("notify", "main"),
    "fim-version": ("version", "main"),
    "fim-help": ("help", "main"),
}


def say(line: str) -> None:
    """A progress line of a long command, shown as it happens."""
    print(line, flush=True)

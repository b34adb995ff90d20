"""fim-exec, fim-root and the boot command: run a program in the container."""

from __future__ import annotations

from fim.runtime import config, container, desktop
from fim.runtime.commands import Context
from fim.runtime.errors import FimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def _run(ctx: Context, program: List[str], as_root: bool, shell: bool = False) -> int:
    cfg = config.resolve(ctx.image, ctx.paths, ctx.environ)
    # Here, before container.run enters the instance's namespaces: the integration's
    # background process works on the host's files, as the caller.
    desktop.on_start(ctx.image, ctx.environ)
    return container.run(cfg, program, as_root, ctx.environ, shell)


def fim_exec(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Incorrect number of arguments for fim-exec")
    return _run(ctx, args, as_root=False)


def fim_root(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Incorrect number of arguments for fim-root")
    return _run(ctx, args, as_root=True)


def boot(ctx: Context, args: List[str]) -> int:
    """No fim- command: the boot command (default: the container's shell), with the
    arguments appended."""
    from fim.runtime.image.settings import BOOT

    stored = ctx.image.read_or(BOOT, [])
    if stored is None:
        return _run(ctx, args, as_root=False, shell=True)
    return _run(ctx, [stored.program] + stored.args + args, as_root=False)

"""fim-instance list | exec ID PROGRAM [ARGS...]: the running instances of this image."""

from __future__ import annotations

from fim.runtime import instance, permissions
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing
from fim.runtime.image.settings import PERMISSIONS, UNSHARE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def _scoped(ctx: Context) -> bool:
    """Whether the instance keeps the host's abstract sockets out of reach (container.py)."""
    bits = ctx.image.read(PERMISSIONS)
    unshared = UNSHARE.named(ctx.image.read(UNSHARE))
    return (PERMISSIONS.has(bits, "network") and "net" not in unshared
            and not permissions.needs_abstract_sockets(bits, ctx.environ))


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-instance' (<exec|list>)")
    op, rest = args[0].lower(), args[1:]
    if op == "list":
        if rest:
            raise trailing("fim-instance", rest)
        for i, (pid, _init) in enumerate(instance.running(ctx.paths)):
            print(f"{i}:{pid}")
        # The keeper holding the image's mounts for the next launch (keeper/).
        for pid, _init in instance.running(ctx.paths, keepers=True):
            print(f"keeper:{pid}")
        return 0
    if op != "exec":
        raise FimError("Invalid instance operation")
    # FlatImage's order: the id's form and the command first, then the instances.
    if not rest:
        raise FimError("Missing 'id' argument for 'fim-instance'")
    if not rest[0].isascii() or not rest[0].isdigit():
        raise FimError("Id argument must be a digit")
    if not rest[1:]:
        raise FimError("Missing 'cmd' argument for 'fim-instance'")
    instances = instance.running(ctx.paths)
    if not instances:
        raise FimError("No instances are running")
    if int(rest[0]) >= len(instances):
        raise FimError("Instance index out of bounds")
    init = instances[int(rest[0])][1]
    target = instance.sandbox_of(init)
    if target is None:
        raise FimError(f"Instance '{rest[0]}' is not running a program yet")
    return instance.exec_in(target, init, rest[1:], _scoped(ctx))

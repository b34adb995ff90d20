"""Landlock scoping: the sandbox reaches no abstract Unix socket made outside it.

Abstract sockets (`@/tmp/.X11-unix/X0`, some D-Bus and IBus addresses) have no
file: they belong to a network namespace, so a program that shares the host's
network (the `network` permission) would reach the X server without `xorg`.
Landlock's scope (ABI 6, Linux 6.12 and later) limits connections to abstract
sockets made by processes of the same Landlock domain; nothing else is
restricted (no file-system rules are handled, so bubblewrap still mounts).
On older kernels the hole stays open and `FIM_DEBUG=1` says so.
"""

from __future__ import annotations

import os
import struct

# The syscall numbers are the same on every architecture (they came after the
# tables were unified).
_CREATE_RULESET, _RESTRICT_SELF = 444, 446
_CREATE_RULESET_VERSION = 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1
MIN_ABI = 6


def abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock."""
    from fim.runtime import libc

    syscall = libc.function("syscall")
    try:
        return syscall(libc.longlong(_CREATE_RULESET), None, libc.longlong(0),
                       libc.longlong(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def scope_abstract_sockets() -> bool:
    """Put this process, and what it starts from now on, in a domain that reaches only
    its own abstract sockets; whether the kernel could. Needs CAP_SYS_ADMIN in the
    current user namespace (an instance's init has it) or no_new_privs."""
    if abi() < MIN_ABI:
        return False
    from fim.runtime import libc

    syscall = libc.function("syscall")
    # struct landlock_ruleset_attr: handled_access_fs, handled_access_net, scoped
    attr = struct.pack("=QQQ", 0, 0, SCOPE_ABSTRACT_UNIX_SOCKET)
    try:
        fd = syscall(libc.longlong(_CREATE_RULESET), attr, libc.longlong(len(attr)),
                     libc.longlong(0))
    except OSError:
        return False
    try:
        syscall(libc.longlong(_RESTRICT_SELF), libc.longlong(fd), libc.longlong(0))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True

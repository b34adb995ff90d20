"""Who the program runs as inside: uid, gid, name, home and shell, and the passwd and
group files that say so."""

from __future__ import annotations

import os

from fim.runtime import rootview, sandbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple


def resolve(uid: int, gid: int, as_root: bool, branches: Sequence[str],
            host_home: Optional[str]) -> sandbox.Identity:
    """fim-root (or a root caller): uid 0; else the caller's ids and name. The home is
    the host's when the `home` permission opened it, else the container's own."""
    shell = "/bin/bash" if rootview.resolve(branches, "/bin/bash") else "/bin/sh"
    if as_root or uid == 0:
        home = host_home if uid == 0 and host_home else "/root"
        return sandbox.Identity(0, 0, "root", home, shell)
    import pwd

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"user{uid}"
    return sandbox.Identity(uid, gid, user, host_home or f"/home/{user}", shell)


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_files(ident: sandbox.Identity, branches: Sequence[str],
                directory: str) -> Tuple[str, str]:
    """The container's passwd and group with one entry for `ident`, written into
    `directory`; their paths."""
    passwd = sandbox.passwd_text(rootview.read_text(branches, "/etc/passwd"), ident)
    group = sandbox.group_text(rootview.read_text(branches, "/etc/group"), ident)
    return (_write(os.path.join(directory, "passwd"), passwd),
            _write(os.path.join(directory, "group"), group))

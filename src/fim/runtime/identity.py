"""Who the program runs as inside: uid, gid, name, home and shell, and the passwd and
group files that say so."""

from __future__ import annotations

import os

from fim.runtime import rootview, sandbox
from fim.runtime.errors import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional, Sequence, Tuple


def resolve(uid: int, gid: int, as_root: bool, branches: Sequence[str],
            host_home: Optional[str], wanted: Mapping[str, str] = {}) -> sandbox.Identity:
    """fim-root: uid 0, always. Else what the image's fim-env sets (UID, GID, USER,
    HOME, SHELL: FlatImage's identity variables), and for the rest the caller: its
    ids and name, the host's home when the `home` permission opened it, else
    /home/NAME (/root for root), and bash when the container has it."""
    shell = "/bin/bash" if rootview.resolve(branches, "/bin/bash") else "/bin/sh"
    if as_root:
        return sandbox.Identity(0, 0, "root", host_home if uid == 0 and host_home else "/root",
                                shell)
    uid = _number(wanted, "UID", uid)
    gid = _number(wanted, "GID", gid)
    shell = _shell(wanted, branches, shell)
    if uid == 0 and "USER" not in wanted and "HOME" not in wanted:
        return sandbox.Identity(0, gid, "root", host_home or "/root", shell)
    user = _checked(wanted, "USER", _user_name, "a user name")
    if user is None:
        import pwd

        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = f"user{uid}"
    home = _checked(wanted, "HOME", _passwd_path, "an absolute path") or host_home or \
        ("/root" if uid == 0 else f"/home/{user}")
    return sandbox.Identity(uid, gid, user, home, shell)


def _user_name(value: str) -> bool:
    """What useradd accepts: a letter or _, then letters, digits, _ . -, an optional
    final $; at most 32 (no `re`: its import costs milliseconds of every start)."""
    body = value[:-1] if value.endswith("$") else value
    return 0 < len(body) <= 32 and (body[0].isascii() and (body[0].isalpha() or body[0] == "_")) \
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in body)


def _passwd_path(value: str) -> bool:
    """Absolute, and without the passwd file's separators."""
    return value.startswith("/") and not any(c in value for c in ":\n\0")


_MAX_ID = 4294967294  # (uid_t)-1 means "no id"


def _ignored(name: str, value: str, wants: str) -> None:
    warn(f"Ignoring {name}='{value}' of the image's environment: it is not {wants}")


def _number(wanted: Mapping[str, str], name: str, default: int) -> int:
    value = wanted.get(name)
    if value is None:
        return default
    if value.isdigit() and int(value) <= _MAX_ID:
        return int(value)
    _ignored(name, value, f"a number from 0 to {_MAX_ID}")
    return default


def _checked(wanted: Mapping[str, str], name: str, form: Callable[[str], bool],
             wants: str) -> Optional[str]:
    value = wanted.get(name)
    if value is None:
        return None
    if form(value):
        return value
    _ignored(name, value, wants)
    return None


def _shell(wanted: Mapping[str, str], branches: Sequence[str], default: str) -> str:
    value = _checked(wanted, "SHELL", _passwd_path, "an absolute path")
    if value is None:
        return default
    if rootview.resolve(branches, value):
        return value
    _ignored("SHELL", value, "a program in the container")
    return default


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


def is_bare_bash(program: Sequence[str]) -> bool:
    """bash started without arguments: an interactive shell whose start-up file fim
    may choose (the image's prompt)."""
    return len(program) == 1 and os.path.basename(program[0]) == "bash"


# Where the generated rc file is seen: the sandbox's /tmp is its own tmpfs, so the
# mount point leaves nothing in the upper directory.
BASHRC = "/tmp/.fim-bashrc"


def write_bashrc(prompt: str, directory: str) -> str:
    return _write(os.path.join(directory, "bashrc"), sandbox.bashrc_text(prompt))

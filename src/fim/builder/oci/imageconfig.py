"""An image config's runtime part as fim settings: Env to fim-env, Entrypoint + Cmd to
fim-boot, User to fim-env's UID/GID/USER/HOME, labels to build.json (`fim inspect`).
The mapping and its limits are in docs/oci.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from fim.builder.oci import tree as t
from fim.runtime.image.settings import Boot

Reader = Callable[[str], Optional[bytes]]  # a small file of the final tree, by path


@dataclass(frozen=True)
class Applied:
    environment: List[str]
    boot: Optional[Boot]
    labels: Dict[str, str]
    workdir: str  # "" when the image names none that exists
    warnings: List[str]


def _valid_key(key: str) -> bool:
    return bool(key) and (key[0].isalpha() or key[0] == "_") and \
        all(c.isalnum() or c == "_" for c in key) and key.isascii()


def _expands(value: str) -> bool:
    """Whether fim-env's expansion would change `value` ($NAME or ${NAME} in it)."""
    for i, c in enumerate(value[:-1]):
        nxt = value[i + 1]
        if c == "$" and (nxt == "{" or nxt == "_" or nxt.isalnum()):
            return True
    return False


def _strings(value: Any) -> List[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def apply(config: Dict[str, Any], tree: t.Tree, read: Reader) -> Applied:
    runtime = config.get("config") or {}
    if not isinstance(runtime, dict):
        runtime = {}
    warnings: List[str] = []
    env: List[str] = []
    for entry in _strings(runtime.get("Env")):
        key, sep, value = entry.partition("=")
        if not sep or not _valid_key(key):
            warnings.append(f"Ignoring the image's environment entry '{entry}': not NAME=value")
            continue
        if _expands(value):
            warnings.append(f"The image's {key}='{value}' holds '$': fim-env expands "
                            "$NAME in values when the container starts")
        env.append(entry)
    keys = {e.partition("=")[0] for e in env}
    user = _string(runtime.get("User"))
    identity, problem = user_entries(user, read)
    if problem:
        warnings.append(problem)
    env += [e for e in identity if e.partition("=")[0] not in keys]
    argv = _strings(runtime.get("Entrypoint")) + _strings(runtime.get("Cmd"))
    boot = Boot(argv[0], argv[1:]) if argv else None
    labels = runtime.get("Labels") or {}
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    workdir = _string(runtime.get("WorkingDir"))
    if workdir:
        found = tree.resolve(workdir) if workdir.startswith("/") else None
        node = tree.get(found) if found is not None else None
        if node is None or node.meta.kind != t.DIR:
            warnings.append(f"The image's WorkingDir '{workdir}' is no directory of the "
                            "image; the program starts in the user's home")
            workdir = ""
    if workdir and workdir != "/" and boot is not None:
        shell = tree.resolve("/bin/sh")
        node = tree.get(shell) if shell is not None else None
        if node is not None and node.meta.kind == t.FILE:
            # fim starts programs in the user's home and appends the run's arguments
            # to the boot command: a shell changes directory, then execs the command
            # with them.
            boot = Boot("/bin/sh", ["-c", _CHDIR, "sh", workdir, boot.program] + boot.args)
        else:
            warnings.append(f"The image's WorkingDir '{workdir}' is not applied: the image "
                            "has no /bin/sh to change into it before its command")
    return Applied(env, boot, labels, workdir, warnings)


_CHDIR = 'cd "$1" && shift && exec "$@"'


def _table(read: Reader, path: str) -> List[List[str]]:
    raw = read(path)
    if raw is None:
        return []
    return [line.split(":") for line in raw.decode("utf-8", "replace").splitlines()
            if line and not line.startswith("#")]


def user_entries(user: str, read: Reader) -> Tuple[List[str], str]:
    """fim-env entries for the config's User (`name`, `uid`, `name:group`, `uid:gid`...),
    and a warning when it names what the image's passwd or group does not hold. Root
    (or no User) adds none: fim runs programs as the caller, and fim-root as root."""
    if not user:
        return [], ""
    name, _, group = user.partition(":")
    passwd = _table(read, "etc/passwd")
    entry: Optional[List[str]] = None
    for row in passwd:
        if len(row) >= 7 and (row[0] == name or (name.isdigit() and row[2] == name)):
            entry = row
            break
    if name.isdigit():
        uid = int(name)
    elif entry is not None and entry[2].isdigit():
        uid = int(entry[2])
    else:
        return [], f"The image's User '{user}' is not in its /etc/passwd; not applied"
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            rows = [r for r in _table(read, "etc/group") if len(r) >= 3 and r[0] == group]
            if not rows or not rows[0][2].isdigit():
                return [], f"The image's User '{user}': no group '{group}' in its /etc/group; " \
                    "not applied"
            gid = int(rows[0][2])
    if uid == 0 and gid == 0:
        return [], ""
    entries = [f"UID={uid}", f"GID={gid}"]
    if entry is not None:
        entries.append(f"USER={entry[0]}")
        if entry[5].startswith("/"):
            entries.append(f"HOME={entry[5]}")
    return entries, ""

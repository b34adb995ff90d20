"""Which ids an instance's user namespace maps.

Rootless, an instance maps the caller to 0 and, when the host grants the caller
subordinate ids (`/etc/subuid`, `/etc/subgid`, as for rootless podman) and has
`newuidmap`/`newgidmap` (Debian's uidmap package), ids 1..N to them: then
every id a package manager hands out (man, messagebus, _apt, ...) is a real
id, and ownership changes succeed and are kept. Without them only the caller
is mapped (`fallback`: see ownership.py). Root needs no map: it runs with the
host's own ids.

Mapping subordinate ids costs 4-8 ms per start (the setuid helpers run once per
instance), so it is used where ownership matters: fim-root, commits, and later
runs on an upper directory that such a run wrote into (the `ids` mark in the
data dir, removed when a commit empties the upper directory).
"""

from __future__ import annotations

import os

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional, Tuple

# How many subordinate ids are mapped at most: 1..65536 covers every id Debian's
# packages use (system users below 1000, nobody 65534).
MAX_SUBORDINATE = 65536
_HOST_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")


@dataclass(frozen=True)
class Subordinate:
    """The ids 1..count inside map to uid_start.. and gid_start.. outside."""

    uid_start: int
    gid_start: int
    count: int
    newuidmap: str
    newgidmap: str

    def uid_args(self, pid: int, uid: int) -> Tuple[str, ...]:
        return ("newuidmap", str(pid), "0", str(uid), "1", "1", str(self.uid_start),
                str(self.count))

    def gid_args(self, pid: int, gid: int) -> Tuple[str, ...]:
        return ("newgidmap", str(pid), "0", str(gid), "1", "1", str(self.gid_start),
                str(self.count))


def ranges(path: str, name: str, number: int) -> Optional[Tuple[int, int]]:
    """(start, count) of the first range `/etc/subuid`-style file `path` grants to
    the user `name` or uid `number`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(number)):
            continue
        if fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            return int(fields[1]), int(fields[2])
    return None


def _tool(name: str) -> Optional[str]:
    for d in _HOST_DIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def subordinate(uid: int, gid: int, environ: Mapping[str, str],
                files: Tuple[str, str] = ("/etc/subuid", "/etc/subgid")) -> Optional[Subordinate]:
    """The caller's subordinate ids and the helpers that map them, or None.
    FIM_SUBIDS=0 turns them off."""
    if uid == 0 or environ.get("FIM_SUBIDS") == "0":
        return None
    import pwd

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    sub_uid = ranges(files[0], user, uid)
    sub_gid = ranges(files[1], user, uid)
    if sub_uid is None or sub_gid is None:
        return None
    newuidmap, newgidmap = _tool("newuidmap"), _tool("newgidmap")
    if newuidmap is None or newgidmap is None:
        return None
    count = min(sub_uid[1], sub_gid[1], MAX_SUBORDINATE)
    return Subordinate(sub_uid[0], sub_gid[0], count, newuidmap, newgidmap)


# Which ids an instance's user namespace maps (what `enter` returns).
HOST_IDS = "host"  # root: no user namespace
SUBORDINATE_IDS = "subordinate"  # the caller and its subordinate ids
SINGLE_ID = "single"  # the caller alone


def wanted(uid: int, as_root: bool, ids_mark: str, environ: Mapping[str, str]) -> str:
    """The ids a run asks for, before any namespace is made: subordinate ones for
    fim-root and on an upper dir such a run wrote into (they may still be refused)."""
    if uid == 0:
        return HOST_IDS
    if environ.get("FIM_SUBIDS") == "0" or not (as_root or os.path.exists(ids_mark)):
        return SINGLE_ID
    return SUBORDINATE_IDS


def enter(uid: int, gid: int, as_root: bool, ids_mark: str, environ: Mapping[str, str],
          log: str, host_mounts: bool = False) -> str:
    """Enter an instance's (or keeper's) namespaces; which ids they map. A fim-root run
    that mapped subordinate ids leaves the `ids` mark for the runs after it."""
    from fim.runtime import namespaces

    if uid == 0:
        namespaces.enter(0, 0, host_mounts=host_mounts)
        return HOST_IDS
    sub = None
    if wanted(uid, as_root, ids_mark, environ) == SUBORDINATE_IDS:
        sub = subordinate(uid, gid, environ)
    if not namespaces.enter(uid, gid, sub=sub, log=log):
        return SINGLE_ID
    if as_root and not os.path.exists(ids_mark):
        with open(ids_mark, "w", encoding="utf-8") as f:
            f.write(SUBORDINATE_IDS + "\n")
    return SUBORDINATE_IDS

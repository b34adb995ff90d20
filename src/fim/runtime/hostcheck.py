"""Why this host refuses the namespaces an instance needs, and the fix for this host.

An instance lives in namespaces the runtime makes itself (namespaces.py): a user
namespace for an ordinary user (plus the one bubblewrap nests in it), mount and
PID ones for everybody. Hosts refuse them in a handful of ways, and the first
failing call only says EPERM or ENOSPC. The evidence that tells them apart is
on the host, read here:

* `kernel.apparmor_restrict_unprivileged_userns = 1` (Ubuntu 23.10 and later):
  an unconfined program gets its user namespace, but without capabilities in it,
  so its first write to uid_map (or its first mount) fails with EPERM;
* `user.max_user_namespaces = 0` (also mnt, pid): unshare fails with ENOSPC;
  above 0, ENOSPC means the caller holds that many already;
* `kernel.unprivileged_userns_clone = 0` (Debian before 11, hardened kernels):
  EPERM for every user but root;
* a seccomp filter (`Seccomp: 2` in /proc/self/status, container engines' default
  profiles): EPERM from unshare and clone with namespace flags;
* root without CAP_SYS_ADMIN (a container's default root): EPERM.

Reading the evidence costs a few small reads; a probe (a forked child that makes
the namespaces and exits) costs about 1 ms, so `check` probes only where the
evidence says a refusal is possible, or when the caller asks (the fallback is on).
A refusal the evidence did not announce is caught at the real call
(namespaces.enter) and explained the same way.
"""

from __future__ import annotations

import errno as _errno
import os

from fim.runtime.errors import FimError
from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

# The sysctls that decide, as `sysctl` names them, under /proc/sys.
APPARMOR = "kernel.apparmor_restrict_unprivileged_userns"
USERNS_CLONE = "kernel.unprivileged_userns_clone"
MAX_USER = "user.max_user_namespaces"
MAX_MNT = "user.max_mnt_namespaces"
MAX_PID = "user.max_pid_namespaces"
SYSCTLS = (APPARMOR, USERNS_CLONE, MAX_USER, MAX_MNT, MAX_PID)

# What the sysctl fixes set, and where they are kept across reboots.
SYSCTL_FILE = "/etc/sysctl.d/60-fim-userns.conf"
# A limit that fits a desktop's sandboxes (browsers, flatpak, podman): Debian's
# default is a fraction of memory, tens of thousands.
NAMESPACE_LIMIT = 15000
CAP_SYS_ADMIN = 21
_UNLIMITED = 2 ** 31 - 1

# Steps of making an instance's namespaces, as a failure names them.
UNSHARE = "unshare"  # the first unshare(2)
ID_MAP = "uid_map"  # writing setgroups, gid_map, uid_map into the new user namespace
MOUNT = "mount"  # the first mount(2) in it (making the tree private)
NESTED = "nested"  # the user namespace bubblewrap makes inside the instance's


@dataclass(frozen=True)
class Evidence:
    """What the host says about namespaces, read before (or after) a refusal."""

    sysctls: Tuple[Tuple[str, int], ...]  # (name, value) of those this kernel has
    seccomp: int  # 0 none, 1 strict, 2 filter
    filters: int  # how many seccomp filters this process runs under
    cap_sys_admin: bool  # in this process's effective capabilities
    apparmor: str  # this process's AppArmor label, "" where AppArmor is not running

    def value(self, name: str) -> Optional[int]:
        for key, value in self.sysctls:
            if key == name:
                return value
        return None

    def lines(self) -> List[str]:
        """The evidence as FIM_DEBUG prints it."""
        out = [f"{k} = {v}" for k, v in self.sysctls]
        out.append(f"seccomp: mode {self.seccomp}, {self.filters} filter(s)")
        out.append(f"CAP_SYS_ADMIN: {'yes' if self.cap_sys_admin else 'no'}")
        out.append(f"AppArmor label: {self.apparmor or 'none (AppArmor not running)'}")
        return out


@dataclass(frozen=True)
class Failure:
    """Which step of making the namespaces failed, and how."""

    step: str
    errno: int
    flags: str  # the namespaces asked for: CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID

    def describe(self) -> str:
        code = _errno.errorcode.get(self.errno, str(self.errno))
        what = {UNSHARE: f"unshare({self.flags})", ID_MAP: "writing uid_map/gid_map",
                MOUNT: "the first mount in the new namespaces",
                NESTED: "unshare(CLONE_NEWUSER) nested, as bubblewrap does"}[self.step]
        return f"{what}: {os.strerror(self.errno)} ({code})"


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    fix: str


class Refused(FimError):
    """The host refuses the namespaces: one E:: line with the cause and the fix."""

    def __init__(self, failure: Failure, evidence: Evidence, diagnosis: Diagnosis) -> None:
        super().__init__(message(diagnosis))
        self.failure = failure
        self.evidence = evidence
        self.diagnosis = diagnosis


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


def _status(text: str) -> Dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _int(text: Optional[str], default: int = 0) -> int:
    try:
        return int((text or "").strip().split()[0])
    except (ValueError, IndexError):
        return default


def evidence(sysctl_dir: str = "/proc/sys", self_dir: str = "/proc/self") -> Evidence:
    """Read the evidence: the sysctls under `sysctl_dir`, this process's seccomp mode,
    capabilities and AppArmor label under `self_dir` (directories, so that a test can
    hand fake ones)."""
    found = []
    for name in SYSCTLS:
        text = _read(os.path.join(sysctl_dir, *name.split(".")))
        if text is not None and text.strip().lstrip("-").isdigit():
            found.append((name, int(text.strip())))
    status = _status(_read(os.path.join(self_dir, "status")) or "")
    try:
        caps = int(status.get("CapEff", "0"), 16)
    except ValueError:
        caps = 0
    label = _read(os.path.join(self_dir, "attr", "apparmor", "current"))
    if label is None and any(name == APPARMOR for name, _ in found):
        label = _read(os.path.join(self_dir, "attr", "current"))  # kernels before 5.8
    return Evidence(
        sysctls=tuple(found),
        seccomp=_int(status.get("Seccomp")),
        filters=_int(status.get("Seccomp_filters")),
        cap_sys_admin=bool(caps >> CAP_SYS_ADMIN & 1),
        apparmor=(label or "").strip("\0\n "),
    )


def suspect(ev: Evidence, uid: int) -> bool:
    """Whether the evidence allows a refusal, i.e. whether a probe is worth its fork."""
    if ev.seccomp != 0 or ev.value(MAX_MNT) == 0 or ev.value(MAX_PID) == 0:
        return True
    if uid == 0:
        return not ev.cap_sys_admin
    # An ordinary user's instance needs two user namespaces: its own and bubblewrap's.
    limit = ev.value(MAX_USER)
    return (ev.value(APPARMOR) == 1 or ev.value(USERNS_CLONE) == 0
            or (limit is not None and limit < 2))


def _unconfined(ev: Evidence) -> bool:
    return ev.apparmor in ("", "unconfined") or ev.apparmor.endswith("(unconfined)")


def _sysctl_fix(name: str, value: int) -> str:
    return (f"sudo sysctl -w {name}={value} (for good: echo {name}={value} | "
            f"sudo tee {SYSCTL_FILE})")


def apparmor_profile(interpreter: str) -> Tuple[str, str]:
    """The profile that gives the interpreter running the image user namespaces: its
    file and its text. The runtime itself calls unshare (namespaces.py), so the profile
    names the interpreter; bubblewrap's nested namespace is made with the capabilities
    the first one gives, which the restriction does not withhold."""
    name = "fim-" + os.path.basename(interpreter)
    text = (f"abi <abi/4.0>,\ninclude <tunables/global>\n"
            f"profile {name} {interpreter} flags=(unconfined) {{\n  userns,\n}}\n")
    return f"/etc/apparmor.d/{name}", text


def _apparmor_fix(interpreter: str) -> str:
    path, text = apparmor_profile(interpreter)
    printf = text.replace("\n", "\\n")
    return (f"allow them for the Python that runs the image (every program it runs gets "
            f"them too): printf '{printf}' | sudo tee {path} >/dev/null && "
            f"sudo apparmor_parser -r {path}; or for every program: "
            + _sysctl_fix(APPARMOR, 0))


def _limits(failure: Failure) -> Tuple[str, ...]:
    names = [MAX_USER] if "NEWUSER" in failure.flags or failure.step == NESTED else []
    if "NEWNS" in failure.flags:
        names.append(MAX_MNT)
    if "NEWPID" in failure.flags:
        names.append(MAX_PID)
    return tuple(names)


def diagnose(failure: Failure, ev: Evidence, uid: int, interpreter: str) -> Diagnosis:
    """The cause of `failure` on a host that shows `ev`, and its fix."""
    if failure.errno == _errno.ENOSPC:
        for name in _limits(failure):
            if ev.value(name) == 0:
                return Diagnosis(f"this host turns these namespaces off ({name} = 0)",
                                 _sysctl_fix(name, NAMESPACE_LIMIT))
        # The limits that can have been reached (a new namespace's are INT_MAX).
        limits = [(n, ev.value(n)) for n in _limits(failure)
                  if ev.value(n) is not None and ev.value(n) != _UNLIMITED]
        shown = ", ".join(f"{n} = {v}" for n, v in limits) or "user.max_*_namespaces"
        name, value = limits[0] if limits else (MAX_USER, NAMESPACE_LIMIT)
        return Diagnosis(f"this user has as many namespaces as the host allows ({shown})",
                         "end programs that hold namespaces (sandboxes, containers), or "
                         "raise the limit: "
                         + _sysctl_fix(name, max(2 * (value or 0), NAMESPACE_LIMIT)))
    if failure.errno == _errno.EUSERS:
        return Diagnosis("namespaces are nested too deeply here (32 user namespaces at most)",
                         "run the image from fewer nested containers")
    if failure.errno not in (_errno.EPERM, _errno.EACCES):
        return Diagnosis(f"the kernel refuses them: {failure.describe()}",
                         "run the image on a host that allows user namespaces")
    if uid != 0 and ev.value(APPARMOR) == 1 and _unconfined(ev):
        return Diagnosis(f"AppArmor refuses user namespaces to unconfined programs "
                         f"({APPARMOR} = 1)", _apparmor_fix(interpreter))
    if uid != 0 and ev.value(APPARMOR) == 1:
        return Diagnosis(f"the AppArmor profile '{ev.apparmor}' this program runs under "
                         f"refuses user namespaces ({APPARMOR} = 1)",
                         "add the rule 'userns,' to that profile and reload it with "
                         "sudo apparmor_parser -r, or " + _sysctl_fix(APPARMOR, 0))
    if uid != 0 and ev.value(USERNS_CLONE) == 0:
        return Diagnosis(f"this kernel refuses user namespaces to ordinary users "
                         f"({USERNS_CLONE} = 0)", _sysctl_fix(USERNS_CLONE, 1))
    if ev.seccomp == 2:
        fix = ("run the container with --security-opt seccomp=unconfined (docker, podman), "
               "or with a profile that allows unshare and clone with namespace flags")
        if uid == 0 and not ev.cap_sys_admin:
            fix += ", and --cap-add SYS_ADMIN"
        return Diagnosis(f"a seccomp filter refuses new namespaces (this process runs "
                         f"under {ev.filters} filter(s), as in a container engine's "
                         f"default profile)", fix)
    if uid == 0 and not ev.cap_sys_admin:
        return Diagnosis("root here lacks CAP_SYS_ADMIN (a container's default root)",
                         "run the container with --cap-add SYS_ADMIN (or --privileged)")
    return Diagnosis("a security module of the host refuses them (no sysctl, seccomp "
                     "filter or missing capability explains it: SELinux, or an LSM "
                     "program)", "allow user namespaces for this program in the "
                     "host's policy")


def message(d: Diagnosis) -> str:
    return (f"This host refuses the namespaces the container needs: {d.cause}. Fix: {d.fix}. "
            "Or run without them: FIM_FALLBACK=proot (weaker isolation)")


def interpreter() -> str:
    """The program that calls unshare: this Python, as the kernel sees it (symlinks
    resolved, as AppArmor attaches profiles)."""
    import sys

    return os.path.realpath(sys.executable or "/usr/bin/python3")


def refused(failure: Failure, uid: int) -> Refused:
    ev = evidence()
    return Refused(failure, ev, diagnose(failure, ev, uid, interpreter()))


def _step(step: str, flags: str, call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except OSError as e:
        raise _Stop(Failure(step, e.errno or _errno.EPERM, flags)) from None


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.step)
        self.failure = failure


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _make(uid: int, gid: int, nested_only: bool) -> Optional[Failure]:
    """In a child about to exit: make the namespaces an instance makes, as it does (or
    only the one bubblewrap nests in them, from inside them)."""
    from fim.runtime import libc

    flags = libc.CLONE_NEWNS | libc.CLONE_NEWPID | (libc.CLONE_NEWUSER if uid else 0)
    names = flag_names(flags)
    try:
        if nested_only:
            _step(NESTED, "CLONE_NEWUSER", libc.unshare, libc.CLONE_NEWUSER)
            return None
        _step(UNSHARE, names, libc.unshare, flags)
        if uid:
            _step(ID_MAP, names, _write, "/proc/self/setgroups", "deny")
            _step(ID_MAP, names, _write, "/proc/self/gid_map", f"0 {gid} 1\n")
            _step(ID_MAP, names, _write, "/proc/self/uid_map", f"0 {uid} 1\n")
        _step(MOUNT, names, libc.mount, "none", "/", "", "", libc.MS_REC | libc.MS_PRIVATE)
        if uid:
            _step(NESTED, "CLONE_NEWUSER", libc.unshare, libc.CLONE_NEWUSER)
    except _Stop as stop:
        return stop.failure
    return None


def flag_names(flags: int) -> str:
    from fim.runtime import libc

    known = (("CLONE_NEWUSER", libc.CLONE_NEWUSER), ("CLONE_NEWNS", libc.CLONE_NEWNS),
             ("CLONE_NEWPID", libc.CLONE_NEWPID))
    return "|".join(name for name, bit in known if flags & bit)


def probe(uid: int, gid: int, nested_only: bool = False) -> Optional[Failure]:
    """Make the instance's namespaces in a child that exits at once; the failure, if any.
    The child reports it on a pipe: `step errno flags`."""
    from fim.runtime import process

    read_end, write_end = os.pipe()

    def child() -> int:
        os.close(read_end)
        failure = _make(uid, gid, nested_only)
        if failure is not None:
            os.write(write_end, f"{failure.step} {failure.errno} {failure.flags}".encode())
        return 0

    try:
        pid = process.fork(child)
    finally:
        os.close(write_end)
    words = process.read_all(read_end).decode("ascii", "replace").split()
    process.wait(pid)
    if len(words) != 3 or not words[1].isdigit():
        return None
    return Failure(words[0], int(words[1]), words[2])


def check(ev: Evidence, uid: int, gid: int, always: bool) -> Optional[Refused]:
    """Before anything is made: the host's refusal of the instance's namespaces, or None.
    Probes only where the evidence `ev` allows a refusal, unless `always`."""
    if not always and not suspect(ev, uid):
        return None
    failure = probe(uid, gid)
    if failure is None:
        return None
    return Refused(failure, ev, diagnose(failure, ev, uid, interpreter()))


def nested(uid: int, ev: Evidence) -> Optional[Refused]:
    """From inside the instance's namespaces, after bubblewrap started no program:
    whether it was refused its own user namespace (a limit reached, a filter that only
    nested calls meet), explained as any refusal is. `ev` was read before the
    namespaces were made: inside them /proc/sys shows their own limits, not the host's."""
    failure = probe(uid, 0, nested_only=True)
    if failure is None:
        return None
    return Refused(failure, ev, diagnose(failure, ev, uid, interpreter()))

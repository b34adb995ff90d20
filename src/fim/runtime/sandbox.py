"""The bubblewrap command line, built from explicit values: nothing here reads the host."""

from __future__ import annotations

from fim.runtime.record import dataclass
from fim.runtime.settings import Binding, expand

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str
    home: str
    shell: str


@dataclass(frozen=True)
class Sandbox:
    bwrap: Sequence[str]  # command prefix
    root_args: Sequence[str]  # from the overlay backend: how "/" is made
    identity: Identity
    passwd: str  # host files bound over /etc/passwd and /etc/group
    group: str
    chdir: str
    status_fd: Optional[int]
    program: Sequence[str]
    share_network: bool = False
    unshare: Sequence[str] = ()  # more namespaces: ipc, uts, cgroup, net
    extra: Sequence[str] = ()  # permissions, then bindings (applied last)


def argv(box: Sandbox) -> List[str]:
    ident = box.identity
    args = [
        *box.bwrap,
        "--die-with-parent",
        "--unshare-user", "--uid", str(ident.uid), "--gid", str(ident.gid),
        "--unshare-pid",
    ]
    if not box.share_network or "net" in box.unshare:
        args.append("--unshare-net")
    for name in box.unshare:
        if name in ("ipc", "uts"):
            args.append(f"--unshare-{name}")
        elif name == "cgroup":
            args.append("--unshare-cgroup-try")
    args += list(box.root_args)
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--ro-bind", "/sys", "/sys",
        "--ro-bind", box.passwd, "/etc/passwd",
        "--ro-bind", box.group, "/etc/group",
        "--dir", ident.home,
    ]
    args += list(box.extra)
    args += ["--chdir", box.chdir]
    if box.status_fd is not None:
        args += ["--json-status-fd", str(box.status_fd)]
    return args + ["--"] + list(box.program)


def bind_args(bindings: Sequence[Binding], environ: Mapping[str, str]) -> List[str]:
    """fim-bind entries as bubblewrap arguments, $VARIABLES in sources expanded."""
    flags = {"ro": "--ro-bind", "rw": "--bind", "dev": "--dev-bind"}
    args: List[str] = []
    for b in bindings:
        args += [flags[b.kind], expand(b.src, dict(environ)), b.dst]
    return args


def environment(host: Mapping[str, str], ident: Identity, fim_vars: Mapping[str, str],
                granted: Mapping[str, str] = {}, entries: Sequence[str] = ()) -> Dict[str, str]:
    """The host's environment, with the container's own PATH and user, then FIM_*, what
    permissions add, and the image's fim-env entries ($VARIABLES expanded) on top."""
    env = dict(host)
    env.update(
        PATH=CONTAINER_PATH, HOME=ident.home, USER=ident.user, LOGNAME=ident.user,
        SHELL=ident.shell,
    )
    env.update(fim_vars)
    env.update(granted)
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = expand(value, dict(host))
    return env


def _entries(text: Optional[str], key_field: int, skip: Sequence[str]) -> List[str]:
    lines = []
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) > key_field and fields[0] not in skip and fields[key_field] not in skip:
            lines.append(line)
    return lines


def passwd_text(container_passwd: Optional[str], ident: Identity) -> str:
    """The container's passwd with exactly one entry for the identity the program runs as."""
    own = f"{ident.user}:x:{ident.uid}:{ident.gid}:{ident.user}:{ident.home}:{ident.shell}"
    lines = _entries(container_passwd, 2, (ident.user, str(ident.uid)))
    return "\n".join(lines + [own]) + "\n"


def group_text(container_group: Optional[str], ident: Identity) -> str:
    own = f"{ident.user}:x:{ident.gid}:"
    lines = _entries(container_group, 2, (ident.user, str(ident.gid)))
    return "\n".join(lines + [own]) + "\n"

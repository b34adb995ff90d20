"""The bubblewrap command line, built from explicit values: nothing here reads the host."""

from __future__ import annotations

from fim.runtime.record import dataclass

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
    bwrap: str
    root_args: Sequence[str]  # from the overlay backend: how "/" is made
    identity: Identity
    passwd: str  # host files bound over /etc/passwd and /etc/group
    group: str
    chdir: str
    status_fd: Optional[int]
    program: Sequence[str]
    share_network: bool = False


def argv(box: Sandbox) -> List[str]:
    ident = box.identity
    args = [
        box.bwrap,
        "--die-with-parent",
        "--unshare-user", "--uid", str(ident.uid), "--gid", str(ident.gid),
        "--unshare-pid",
    ]
    if not box.share_network:
        args.append("--unshare-net")
    args += list(box.root_args)
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--ro-bind", "/sys", "/sys",
        "--ro-bind", box.passwd, "/etc/passwd",
        "--ro-bind", box.group, "/etc/group",
        "--dir", ident.home,
        "--chdir", box.chdir,
    ]
    if box.status_fd is not None:
        args += ["--json-status-fd", str(box.status_fd)]
    return args + ["--"] + list(box.program)


def environment(host: Mapping[str, str], ident: Identity,
                fim_vars: Mapping[str, str]) -> Dict[str, str]:
    """The host's environment, with the container's own PATH and user, then FIM_* on top."""
    env = dict(host)
    env.update(
        PATH=CONTAINER_PATH, HOME=ident.home, USER=ident.user, LOGNAME=ident.user,
        SHELL=ident.shell,
    )
    env.update(fim_vars)
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

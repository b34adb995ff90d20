"""The bubblewrap command line, built from explicit values: nothing here reads the host."""

from __future__ import annotations

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

    from fim.runtime.image.settings import Binding

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
    # A user namespace of bubblewrap's own, mapping only the identity's ids. Without
    # one the program is root of the instance's namespace (every id mapped, or the
    # host's own ids for root), with ROOT_CAPS.
    userns: bool = True
    seccomp_fd: Optional[int] = None  # a program for the sandboxed program (seccomp.py)


# What root inside keeps when it is not in a user namespace of its own: what package
# managers and their scripts need (ownership, modes, device nodes, setuid programs,
# chroot), as container engines give by default; no CAP_SYS_ADMIN, CAP_SYS_MODULE,
# CAP_SYS_PTRACE, CAP_NET_ADMIN, ...
ROOT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def argv(box: Sandbox) -> List[str]:
    ident = box.identity
    # No --die-with-parent and no --unshare-pid: the sandbox's PID namespace and its
    # init are reaper.py's, which bounds every process's life and lets them end on
    # SIGTERM (bubblewrap's death would SIGKILL the program first).
    args = list(box.bwrap)
    if box.userns:
        args += ["--unshare-user", "--uid", str(ident.uid), "--gid", str(ident.gid)]
    else:
        args += ["--cap-drop", "ALL"]
        for cap in ROOT_CAPS:
            args += ["--cap-add", cap]
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
    if box.seccomp_fd is not None:
        args += ["--seccomp", str(box.seccomp_fd)]
    return args + ["--"] + list(box.program)


def bind_args(bindings: Sequence[Binding], environ: Mapping[str, str]) -> List[str]:
    """fim-bind entries as bubblewrap arguments, $VARIABLES in sources expanded."""
    flags = {"ro": "--ro-bind", "rw": "--bind", "dev": "--dev-bind"}
    args: List[str] = []
    for b in bindings:
        args += [flags[b.kind], expand(b.src, environ), b.dst]
    return args


def environment(host: Mapping[str, str], ident: Identity, fim_vars: Mapping[str, str],
                granted: Mapping[str, str] = {}, entries: Sequence[str] = (),
                appended: Mapping[str, Tuple[str, str]] = {}) -> Dict[str, str]:
    """The host's environment, with the container's own PATH and user, then FIM_*, what
    permissions add, and the image's fim-env entries ($VARIABLES expanded) on top;
    last, search paths extended after what they hold (or their default when unset)."""
    env = dict(host)
    env["PATH"] = CONTAINER_PATH
    env.update(fim_vars)
    env.update(granted)
    env.update(fim_env(entries, host))
    # The identity last: fim-env's HOME, USER and SHELL shaped it, or were refused.
    env.update(HOME=ident.home, USER=ident.user, LOGNAME=ident.user, SHELL=ident.shell)
    for key, (value, default) in appended.items():
        before = env.get(key) or default
        env[key] = f"{before}:{value}" if before else value
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


def fim_env(entries: Sequence[str], host: Mapping[str, str]) -> Dict[str, str]:
    """The fim-env entries, expanded as a shell user expects: `$VAR` and `${VAR}` from
    the entries before (as expanded), then the host's environment; an unknown variable
    is empty. Nothing else is interpreted (no command substitution, no quotes)."""
    values: Dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        values[key] = expand(value, values, host, unknown="")
    return values


def expand(text: str, environ: Mapping[str, str], fallback: Mapping[str, str] = {},
           unknown: Optional[str] = None) -> str:
    """$VAR and ${VAR} from `environ`, else `fallback`; an unknown variable becomes
    `unknown`, or stays as written when that is None (bind sources: a path with a
    literal $ stays that path)."""
    def lookup(name: str, written: str) -> str:
        if name in environ:
            return environ[name]
        if name in fallback:
            return fallback[name]
        return written if unknown is None else unknown

    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text):
            if text[i + 1] == "{":
                end = text.find("}", i + 2)
                if end > 0:
                    out.append(lookup(text[i + 2:end], text[i:end + 1]))
                    i = end + 1
                    continue
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if j > i + 1:
                out.append(lookup(text[i + 1:j], text[i:j]))
                i = j
                continue
        out.append(c)
        i += 1
    return "".join(out)


def bashrc_text(prompt: str) -> str:
    """The rc file of an interactive bash started by fim when the image sets PS1: the
    start-up files bash reads by itself, then the image's prompt (theirs set one too).
    One pair of quotes around the value is taken off, as FlatImage's examples write it
    (`'PS1="[\\#] \\W > "'`)."""
    if len(prompt) >= 2 and prompt[0] == prompt[-1] and prompt[0] in "'\"":
        prompt = prompt[1:-1]
    quoted = "'" + prompt.replace("'", "'\\''") + "'"
    return ("[ -r /etc/bash.bashrc ] && . /etc/bash.bashrc\n"
            '[ -r "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n'
            f"PS1={quoted}\n")


def parse_status(text: str) -> Tuple[Optional[int], Optional[int]]:
    """Child pid and exit code from bubblewrap's --json-status-fd output."""
    child = code = None
    for line in text.splitlines():
        # One flat object per line, e.g. { "exit-code": 7 }: no JSON parser needed.
        for item in line.strip().strip("{}").split(","):
            key, _, value = item.partition(":")
            value = value.strip()
            if not value.isdigit():
                continue
            key = key.strip().strip('"')
            if key == "child-pid":
                child = int(value)
            elif key == "exit-code":
                code = int(value)
    return child, code

"""The proot command line of the fallback, built from explicit values: nothing here
reads the host but whether a `-try` bind's source exists."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence, Tuple

# What every run gets, as bubblewrap gives it: the host's devices, processes and
# kernel objects (proot has no fresh /proc or minimal /dev to offer).
HOST_BINDS = ("/dev", "/proc", "/sys")
_BINDS = ("--bind", "--ro-bind", "--dev-bind")


def binds(options: Sequence[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """bubblewrap bind options (permissions.Grant.args, sandbox.bind_args) as proot
    binds (source, destination); and what proot cannot give as asked, for FIM_DEBUG:
    every bind is read-write (proot has no read-only bind), a missing `-try` source is
    skipped, and directory or mode options have no equivalent."""
    out: List[Tuple[str, str]] = []
    notes: List[str] = []
    i = 0
    while i < len(options):
        flag = options[i]
        kind = flag[:-4] if flag.endswith("-try") else flag
        if kind in _BINDS and i + 2 < len(options):
            src, dst = options[i + 1], options[i + 2]
            i += 3
            if flag.endswith("-try") and not os.path.exists(src):
                continue
            if ":" in src or ":" in dst:
                notes.append(f"{src} -> {dst}: a ':' in a path, proot cannot bind it")
                continue
            if kind == "--ro-bind":
                notes.append(f"{src} -> {dst}: writable (proot has no read-only bind)")
            out.append((src, dst))
            continue
        operands = {"--dir": 1, "--perms": 1, "--tmpfs": 1, "--symlink": 2}.get(flag, 0)
        notes.append(f"{' '.join(options[i:i + 1 + operands])}: no proot equivalent")
        i += 1 + operands
    return out, notes


def argv(proot: Sequence[str], root: str, host_binds: Sequence[Tuple[str, str]],
         cwd: str, fake_root: bool, program: Sequence[str]) -> List[str]:
    """proot running `program` in `root` with `host_binds`, in `cwd`; `-0` makes the
    caller look like root (fim-root of an ordinary user)."""
    args = [*proot, "-r", root]
    if fake_root:
        args.append("-0")
    for src, dst in host_binds:
        args += ["-b", f"{src}:{dst}"]
    return args + ["-w", cwd] + list(program)

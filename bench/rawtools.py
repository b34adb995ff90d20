"""The floor for benchmarks: the same mounts and bubblewrap call as fim, by hand.

A script made here enters private namespaces with `unshare`, mounts layer 0 of
an image with `squashfuse_ll -o offset=N`, mounts the overlay with the backend's
own tool (or lets bubblewrap make it), runs the same bubblewrap command line fim
builds (same binary, binds, identity), then unmounts and removes the work dir.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from fim.runtime import sandbox, tools
from fim.runtime.image import chain, header
from fim.runtime.overlays import bwrap as native_overlay
from fim.runtime.overlays import fuse_overlayfs, unionfs


def timed(argv: List[str], env: Optional[Dict[str, str]] = None) -> float:
    """Wall seconds of one run of `argv` (stdout discarded; failure raises)."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def layer0_offset(image: Path) -> int:
    head = header.read(str(image))
    fd = os.open(image, os.O_RDONLY)
    try:
        return chain.scan(fd, head).elements[0].offset
    finally:
        os.close(fd)


def identity(uid: int, gid: int, user: str) -> sandbox.Identity:
    if uid == 0:
        return sandbox.Identity(0, 0, "root", "/root", "/bin/sh")
    return sandbox.Identity(uid, gid, user, f"/home/{user}", "/bin/sh")


def commands(runtime_dir: str) -> Dict[str, List[str]]:
    """The exact commands fim uses for each tool: the image's copies (through its
    loader) where it carries them, else the host's."""
    found = {}
    for name in ("bwrap", "squashfuse_ll", "fuse-overlayfs", "unionfs"):
        command = tools.find(runtime_dir, name, os.environ)
        if command is None:
            raise SystemExit(f"{name} not found")
        found[name] = command
    return found


def script(image: Path, work: Path, backend: str, cmds: Dict[str, List[str]],
           ident: sandbox.Identity, program: List[str],
           passwd: str = "root:x:0:0:root:/root:/bin/sh\n") -> Path:
    """Write `work/raw-<backend>.sh` and return it; `work/upper` is its upper dir."""
    mnt, merged = work / "layer0", work / "merged"
    upper, wdir = work / "upper", work / "work"
    for d in (mnt, merged, upper):
        d.mkdir(parents=True, exist_ok=True)
    (work / "passwd").write_text(sandbox.passwd_text(passwd, ident))
    (work / "group").write_text(sandbox.group_text("root:x:0:\n", ident))
    q = shlex.quote
    steps = [
        shlex.join(cmds["squashfuse_ll"] + ["-o", f"offset={layer0_offset(image)}", str(image),
                                          str(mnt)]),
        f"mkdir -p {q(str(wdir))}",
    ]
    if backend == "bwrap":
        root_args = native_overlay.bwrap_args([str(mnt)], str(upper), str(wdir))
    else:
        if backend == "overlayfs":
            argv = fuse_overlayfs.mount_argv(cmds["fuse-overlayfs"], [str(mnt)], str(upper),
                                             str(wdir), str(merged))
        else:
            argv = unionfs.mount_argv(cmds["unionfs"], [str(mnt)], str(upper), str(merged))
        steps.append(shlex.join(argv) + " 2>/dev/null")
        root_args = ["--bind", str(merged), "/"]
    box = sandbox.Sandbox(
        bwrap=cmds["bwrap"], root_args=root_args, identity=ident, passwd=str(work / "passwd"),
        group=str(work / "group"), chdir=ident.home, status_fd=3, program=program,
    )
    inner = " && ".join(steps) + f" && {shlex.join(sandbox.argv(box))} 3>/dev/null; s=$?;"
    if backend != "bwrap":
        inner += f" umount -l {q(str(merged))};"
    inner += f" umount -l {q(str(mnt))}; rm -rf {q(str(wdir))}; exit $s"
    ns = (["--mount", "--propagation", "private"] if ident.uid == 0 and os.getuid() == 0
          else ["--user", "--map-root-user", "--mount"])
    path = work / f"raw-{backend}.sh"
    path.write_text("#!/bin/sh\nexec unshare " + " ".join(ns)
                    + " --pid --fork --kill-child --mount-proc sh -c " + shlex.quote(inner) + "\n")
    path.chmod(0o755)
    return path

"""fim-version short|full|deps"""

from __future__ import annotations

import json
import os
import sys

from fim.runtime import VERSION, process, tools
from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List

# Tool -> arguments that make it print its version.
_VERSION_ARGS = {
    "bwrap": ["--version"], "squashfuse": ["--version"], "squashfuse_ll": ["--version"],
    "mksquashfs": ["-version"],
    "fuse-overlayfs": ["--version"], "unionfs": ["--version"], "fusermount3": ["--version"],
    "dwarfs": ["--version"],
}


def build_info(ctx: Context) -> Dict[str, Any]:
    try:
        with open(os.path.join(ctx.paths.dir_runtime, "build.json"), encoding="utf-8") as f:
            info: Dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        info = {}
    header = ctx.image.header
    info.update(version=VERSION, build_id=header.build_id, format_version=header.version)
    return info


def _tool_version(name: str, command: List[str], args: List[str]) -> str:
    _, out = process.capture(command + args, timeout=10)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    # Tools print library versions too; the tool's own line names it.
    own = {"bwrap": "bubblewrap", "squashfuse_ll": "squashfuse"}.get(name, name)
    for line in lines:
        if line.lower().startswith(own) and any(c.isdigit() for c in line):
            return line
    return lines[0] if lines else "unknown"


def deps(ctx: Context) -> Dict[str, Any]:
    runtime = ctx.paths.dir_runtime
    found: Dict[str, Any] = {}
    for name, args in _VERSION_ARGS.items():
        embedded = tools.embedded(runtime, name)
        host = tools.on_host(name, ctx.environ)
        command = embedded or ([host] if host else None)
        if command is None:
            found[name] = {"found": False}
            continue
        found[name] = {"found": True, "path": command[-1],
                       "copy": "embedded" if embedded else "host",
                       "version": _tool_version(name, command, args)}
    found["python3"] = python_in_use()
    return found


def python_in_use() -> Dict[str, Any]:
    """The interpreter this run uses: the host's, or the image's own (the launcher
    extracts it under /tmp/fim-UID/python/ when the host has no python3 3.9+)."""
    executable = os.path.realpath(sys.executable)
    own = os.path.realpath(f"/tmp/fim-{os.getuid()}/python") + os.sep
    return {"found": True, "path": executable,
            "copy": "embedded" if executable.startswith(own) else "host",
            "version": "Python " + ".".join(str(n) for n in sys.version_info[:3])}


def main(ctx: Context, args: List[str]) -> int:
    if not args:
        raise FimError("Missing op for 'fim-version' (short,full,deps)")
    op, rest = args[0], args[1:]
    if rest:
        raise trailing("fim-version", rest)
    if op == "short":
        print(VERSION)
    elif op == "full":
        print(json.dumps(build_info(ctx), indent=2))
    elif op == "deps":
        print(json.dumps(deps(ctx), indent=2))
    else:
        raise FimError(f"Invalid op '{op}' for 'fim-version' (short,full,deps)")
    return 0

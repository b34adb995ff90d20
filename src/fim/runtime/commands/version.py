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


def build_record(runtime: str) -> Dict[str, Any]:
    """The runtime's build.json as the builder wrote it ({} when unreadable)."""
    try:
        with open(os.path.join(runtime, "build.json"), encoding="utf-8") as f:
            info: Dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def build_info(ctx: Context) -> Dict[str, Any]:
    """fim's own build fields, and FlatImage's four keys alongside (`COMMIT`,
    `DISTRIBUTION`, `TIMESTAMP` as YYYYMMDDHHMMSS, `VERSION` as vX.Y.Z)."""
    from fim.runtime.fimvars import timestamp

    info = build_record(ctx.paths.dir_runtime)
    header = ctx.image.header
    info.update(version=VERSION, build_id=header.build_id, format_version=header.version)
    info.update(COMMIT=str(info.get("commit") or "unknown"),
                DISTRIBUTION=str(info.get("dist") or "UNKNOWN"),
                TIMESTAMP=timestamp(ctx.paths.dir_runtime) or "unknown",
                VERSION="v" + VERSION)
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
        raise FimError("Missing op for 'fim-version' (<short|full|deps>)")
    op, rest = args[0].lower(), args[1:]
    if op not in ("short", "full", "deps"):
        raise FimError("Invalid version operation")
    if rest:
        raise trailing("fim-version", rest)
    if op == "short":
        print("v" + VERSION)
    elif op == "full":
        # FlatImage's JSON: two spaces, keys sorted.
        print(json.dumps(build_info(ctx), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(json.dumps(deps(ctx), indent=2))
    return 0

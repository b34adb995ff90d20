"""fim-help [COMMAND]: usage of the image's commands."""

from __future__ import annotations

from fim.runtime.commands import Context
from fim.runtime.errors import FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

PERMISSIONS = ("all,audio,dbus_system,dbus_user,dev,gpu,home,input,media,network,optical,"
               "portal,shm,udev,usb,wayland,xorg")

USAGE = {
    "fim-exec": "fim-exec PROGRAM [ARGS...]\n  Run PROGRAM in the container as the calling user.",
    "fim-root": "fim-root PROGRAM [ARGS...]\n  Run PROGRAM in the container as uid 0.",
    "fim-overlay": (
        "fim-overlay set <bwrap|overlayfs|unionfs> | fim-overlay show\n"
        "  Store the overlay type in the image, or print the effective one\n"
        "  (FIM_OVERLAY overrides the stored value for one run)."
    ),
    "fim-layer": (
        "fim-layer create DIR FILE | add FILE | commit <binary|layer|file PATH> | list\n"
        "          | verify | extract INDEX DIR\n"
        "  create: compress DIR into a layer file. add: append a layer file to the image.\n"
        "  commit: compress the changes made in the container into a layer appended to\n"
        "  the image (binary), saved as .NAME.data/layers/layer-NNN.layer (layer) or to\n"
        "  PATH (file), then clear them. list: index:offset:size:path in mount order.\n"
        "  verify: check every layer against the digest recorded when it was made\n"
        "  (ok, damaged, no digest); runs check each layer once after it changed.\n"
        "  extract: write layer INDEX's own tree (its deletion markers too) to DIR.\n"
        "  FIM_COMPRESSION_LEVEL=0..9 (default 7); FIM_LAYERS=a.layer:dir adds layers."
    ),
    "fim-casefold": (
        "fim-casefold on|off\n"
        "  A case-insensitive, case-preserving root (for Wine/Proton); needs a FUSE\n"
        "  overlay, so BWRAP falls back to UNIONFS while it is on."
    ),
    "fim-perms": (
        "fim-perms add|del|set <p1,p2,...> | list | clear\n"
        f"  Permissions: {PERMISSIONS}. Default: none (no network, no home)."
    ),
    "fim-bind": (
        "fim-bind add <ro|rw|dev> SRC DST | del INDEX | list\n"
        "  Bind a host path into the container; $VARIABLES in SRC expand at run time."
    ),
    "fim-env": (
        "fim-env add|set 'NAME=value'... | del NAME... | list | clear\n"
        "  Environment of the container; $VARIABLES in values expand at run time."
    ),
    "fim-boot": (
        "fim-boot set PROGRAM [ARGS...] | show | clear\n"
        "  The program run when the image is started without a fim- command (default:\n"
        "  bash if the image has it, else sh); arguments given then are appended."
    ),
    "fim-instance": (
        "fim-instance list | exec ID PROGRAM [ARGS...]\n"
        "  List the running instances of this image (ID:PID), or run a program in one."
    ),
    "fim-unshare": (
        "fim-unshare add|del|set <ns,...> | list | clear\n"
        "  More namespaces for the container: all,user,ipc,pid,net,uts,cgroup\n"
        "  (user and pid are always private; net is private without the network permission)."
    ),
    "fim-remote": (
        "fim-remote set URL | show | clear\n"
        "  The http(s) URL fim-recipe fetches recipes from (stored in the image)."
    ),
    "fim-recipe": (
        "fim-recipe fetch|info|install NAME[,NAME...]\n"
        "  fetch: download recipes and their dependencies from URL/DISTRO/latest/NAME.json\n"
        "  into the data directory's recipes/ cache. info: show cached recipes. install:\n"
        "  install their packages (dependencies first) with the image's package manager;\n"
        "  needs the network permission. FIM_RECIPE_TIMEOUT: seconds per download (30)."
    ),
    "fim-version": (
        "fim-version short|full|deps\n  Version; build information; native tools (JSON)."
    ),
    "fim-help": "fim-help [COMMAND]\n  Print the usage of every command, or of one.",
}


def main(ctx: Context, args: List[str]) -> int:
    if len(args) > 1:
        raise trailing("fim-help", args[1:])
    if args:
        text = USAGE.get(args[0]) or USAGE.get("fim-" + args[0])
        if text is None:
            raise FimError(f"No help for '{args[0]}'")
        print(text)
        return 0
    print("Usage: IMAGE [ARGS...] | IMAGE fim-COMMAND [ARGS...]\n")
    print("\n\n".join(USAGE.values()))
    return 0

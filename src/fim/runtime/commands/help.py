"""fim-help [COMMAND]: usage of the image's commands, in FlatImage's layout.

An entry is its first line, `NAME : what it does`, then `Usage:` lines each
followed by its `  <word> : meaning` lines, with `Note:` and `Example:` lines
where they help, all under one title line. `fim-help` alone prints the entry of
fim-help itself, which names every command; `fim-help bind` (or `fim-help
fim-bind`) prints one. The words are fim's own; the layout is FlatImage's
(src/parser/cmd/help.hpp of v2.0.1), so that a reader of one reads the other.
"""

from __future__ import annotations

from fim.runtime.commands import COMMANDS, Context
from fim.runtime.errors import FimError, trailing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Sequence, Tuple

    # (kind, text) or ("arg", word, meaning); kinds: usage, arg, note, example
    Line = Tuple[str, ...]

TITLE = "fim - Portable Linux Applications"

PERMISSIONS = ("all,audio,dbus_system,dbus_user,dev,gpu,home,input,media,network,optical,"
               "portal,shm,udev,usb,wayland,xorg")

PROGRAM_ARGS: Sequence[Line] = (
    ("arg", "program", "A program of the container, by name (searched in its PATH) or path"),
    ("arg", "args...", "Its arguments"),
)

# command -> (what it does, its lines)
ENTRIES: Dict[str, Tuple[str, Sequence[Line]]] = {
    "fim-exec": ("Run a program in the container as the calling user", (
        ("usage", "fim-exec <program> [args...]"),
        *PROGRAM_ARGS,
        ("example", "fim-exec sh -c 'id -u; echo $HOME'"),
    )),
    "fim-root": ("Run a program in the container as uid 0", (
        ("usage", "fim-root <program> [args...]"),
        *PROGRAM_ARGS,
        ("example", "fim-root apt-get install -y vim"),
    )),
    "fim-perms": ("Choose what of the host the container may reach", (
        ("note", f"Permissions: {PERMISSIONS}"),
        ("note", "Without any, the container has no network and no view of the home"),
        ("usage", "fim-perms <add|del|set> <perms...>"),
        ("arg", "add", "Grant these permissions too"),
        ("arg", "del", "Take these permissions away"),
        ("arg", "set", "Grant exactly these permissions"),
        ("arg", "perms...", "Permission names, separated by commas"),
        ("example", "fim-perms add home,network,wayland"),
        ("note", "'all' grants every permission and stands alone"),
        ("usage", "fim-perms <list|clear>"),
        ("arg", "list", "Print the granted permissions, one a line"),
        ("arg", "clear", "Take every permission away"),
    )),
    "fim-unshare": ("Give the container namespaces of its own", (
        ("note", "Namespaces: all,user,ipc,pid,net,uts,cgroup"),
        ("note", "user and pid are always the container's own; net is, without the "
                 "network permission"),
        ("usage", "fim-unshare <add|del|set> <namespaces...>"),
        ("arg", "add", "Unshare these namespaces too"),
        ("arg", "del", "Share these namespaces again"),
        ("arg", "set", "Unshare exactly these namespaces"),
        ("arg", "namespaces...", "Namespace names, separated by commas"),
        ("example", "fim-unshare add ipc,uts"),
        ("note", "'all' unshares every namespace and stands alone"),
        ("usage", "fim-unshare <list|clear>"),
        ("arg", "list", "Print the unshared namespaces, one a line"),
        ("arg", "clear", "Share every namespace again"),
    )),
    "fim-env": ("Set the container's environment variables", (
        ("usage", "fim-env <add|set> <'name=value'...>"),
        ("arg", "add", "Store these variables, replacing any of the same name"),
        ("arg", "set", "Store exactly these variables"),
        ("arg", "'name=value'...", "Variables; $NAME and ${NAME} in a value expand at run time"),
        ("example", "fim-env add 'LANG=C.UTF-8' 'DATA=$HOME/data'"),
        ("usage", "fim-env <del> <names...>"),
        ("arg", "del", "Remove these variables"),
        ("arg", "names...", "Names of the variables to remove"),
        ("usage", "fim-env <list|clear>"),
        ("arg", "list", "Print the variables sorted by name, their values expanded"),
        ("arg", "clear", "Remove every variable"),
    )),
    "fim-bind": ("Show a host path inside the container", (
        ("usage", "fim-bind <add> <type> <src> <dst>"),
        ("arg", "add", "Store a binding of <src> on the host at <dst> in the container"),
        ("arg", "type", "ro (read-only), rw (read-write) or dev (a device)"),
        ("arg", "src", "A host path; $NAME and ${NAME} expand at run time"),
        ("arg", "dst", "An absolute path in the container"),
        ("example", "fim-bind add ro '$HOME/Music' /music"),
        ("usage", "fim-bind <del> <index>"),
        ("arg", "del", "Remove a binding; the ones after it move down"),
        ("arg", "index", "Its index, as fim-bind list shows it"),
        ("usage", "fim-bind <list>"),
        ("arg", "list", "Print the bindings as JSON, by index"),
    )),
    "fim-boot": ("Choose what the image runs when started without a fim- command", (
        ("usage", "fim-boot <set> <program> [args...]"),
        ("arg", "set", "Run <program> with [args...], then the arguments of the start"),
        ("arg", "program", "A program of the container"),
        ("arg", "args...", "Its first arguments"),
        ("example", "fim-boot set firefox --new-window"),
        ("usage", "fim-boot <show|clear>"),
        ("arg", "show", "Print the boot command as JSON"),
        ("arg", "clear", "Go back to the default: bash when the image has it, else sh"),
    )),
    "fim-casefold": ("Make the container's root case-insensitive (for Wine and Proton)", (
        ("usage", "fim-casefold <on|off>"),
        ("arg", "on", "Names match whatever their case; the case written is kept"),
        ("arg", "off", "Names match exactly"),
        ("note", "It needs a FUSE overlay: while it is on, bwrap runs as unionfs"),
    )),
    "fim-overlay": ("Choose the overlay that keeps the container's changes", (
        ("usage", "fim-overlay <set> <bwrap|overlayfs|unionfs>"),
        ("arg", "set", "Store the overlay in the image"),
        ("arg", "bwrap", "The kernel's overlayfs, through bubblewrap (the default)"),
        ("arg", "overlayfs", "fuse-overlayfs"),
        ("arg", "unionfs", "unionfs-fuse"),
        ("usage", "fim-overlay <show>"),
        ("arg", "show", "Print the overlay a run uses: BWRAP, OVERLAYFS or UNIONFS"),
        ("note", "FIM_OVERLAY=bwrap|overlayfs|unionfs chooses for one run"),
    )),
    "fim-layer": ("Manage the image's layers", (
        ("usage", "fim-layer <create> <in-dir> <out-file>"),
        ("arg", "create", "Compress <in-dir> into the layer file <out-file>, which it replaces"),
        ("arg", "in-dir", "The directory to compress"),
        ("arg", "out-file", "The layer file to write"),
        ("usage", "fim-layer <add> <in-file>"),
        ("arg", "add", "Append the layer <in-file> to the image, on top of the others"),
        ("arg", "in-file", "A layer file, from fim-layer create or commit"),
        ("usage", "fim-layer <commit> <binary|layer|file> [path]"),
        ("arg", "commit", "Compress the container's changes into a layer, then clear them"),
        ("arg", "binary", "Append the layer to the image"),
        ("arg", "layer", "Save it as layer-NNN.layer in the data directory's layers/"),
        ("arg", "file", "Save it as <path>"),
        ("arg", "path", "A file that does not exist yet (file only)"),
        ("usage", "fim-layer <list>"),
        ("arg", "list", "Print the layers in mount order as index:offset:size:path"),
        ("usage", "fim-layer <verify>"),
        ("arg", "verify", "Check every layer against the digest written when it was made"),
        ("usage", "fim-layer <extract> <index> <out-dir>"),
        ("arg", "extract", "Write one layer's own files, its deletions too, to <out-dir>"),
        ("arg", "index", "The layer's index, as fim-layer list shows it"),
        ("arg", "out-dir", "A directory that does not exist yet"),
        ("note", "FIM_COMPRESSION_LEVEL=0..9 (7 unless set); FIM_LAYERS=a.layer:dir adds layers"),
    )),
    "fim-instance": ("Reach the running instances of this image", (
        ("usage", "fim-instance <exec> <id> <program> [args...]"),
        ("arg", "exec", "Run a program inside a running instance"),
        ("arg", "id", "The instance's id, as fim-instance list shows it"),
        *PROGRAM_ARGS,
        ("example", "fim-instance exec 0 ps aux"),
        ("usage", "fim-instance <list>"),
        ("arg", "list", "Print the running instances as id:pid"),
    )),
    "fim-remote": ("Choose where fim-recipe fetches recipes from", (
        ("usage", "fim-remote <set> <url>"),
        ("arg", "set", "Store the URL in the image"),
        ("arg", "url", "An http:// or https:// URL"),
        ("example", "fim-remote set https://example.org/recipes"),
        ("usage", "fim-remote <show|clear>"),
        ("arg", "show", "Print the URL"),
        ("arg", "clear", "Forget the URL"),
    )),
    "fim-recipe": ("Install package sets described by recipes", (
        ("usage", "fim-recipe <fetch|info|install> <recipes>"),
        ("arg", "fetch", "Download the recipes and those they depend on into the cache"),
        ("arg", "info", "Print what the cached recipes hold"),
        ("arg", "install", "Fetch, then install their packages, dependencies first"),
        ("arg", "recipes", "Recipe names, separated by commas"),
        ("note", "Recipes are URL/DISTRO/latest/NAME.json of the fim-remote URL"),
        ("note", "install needs the network permission; FIM_RECIPE_TIMEOUT: seconds a "
                 "download may take (30)"),
        ("example", "fim-recipe install audio,gpu"),
    )),
    "fim-desktop": ("Put the application in the desktop's menus", (
        ("usage", "fim-desktop <setup> <json-file>"),
        ("arg", "setup", "Store the name, icon, categories and integrations the file gives"),
        ("arg", "json-file", "Its path; the icon's path is relative to it"),
        ("usage", "fim-desktop <enable> <entry,mimetype,icon|none>"),
        ("arg", "enable", "Choose what a run installs for the desktop"),
        ("arg", "entry", "The menu entry"),
        ("arg", "mimetype", "The image's file type"),
        ("arg", "icon", "The icons"),
        ("arg", "none", "Nothing"),
        ("usage", "fim-desktop <clean>"),
        ("arg", "clean", "Remove every file a run installed for the image"),
        ("usage", "fim-desktop <dump> <icon> <file>"),
        ("arg", "dump", "Print or write what is stored"),
        ("arg", "icon", "Write the icon to <file>, its extension added when missing"),
        ("usage", "fim-desktop <dump> <entry|mimetype>"),
        ("arg", "entry", "Print the menu entry"),
        ("arg", "mimetype", "Print the file type's description"),
    )),
    "fim-notify": ("Say on the desktop that the application starts", (
        ("usage", "fim-notify <on|off>"),
        ("arg", "on", "Show a notification with the name and icon at each start"),
        ("arg", "off", "Start silently"),
    )),
    "fim-version": ("Print versions", (
        ("usage", "fim-version <short|full|deps>"),
        ("arg", "short", "fim's version, as vX.Y.Z"),
        ("arg", "full", "The version and the build's details, as JSON"),
        ("arg", "deps", "The tools a run uses and their versions, as JSON"),
    )),
    "fim-help": ("Print how a command is used", (
        ("usage", "fim-help <cmd>"),
        ("arg", "cmd", "A command, with or without its fim- prefix"),
        # The names follow: the commands this image has (see `entry`).
        ("example", "fim-help bind"),
    )),
}

PREFIX = {"usage": "Usage: ", "note": "Note: ", "example": "Example: "}


def commands() -> List[str]:
    """The commands this image has and can explain, in the order fim-help names them."""
    return sorted(name for name in COMMANDS if name in ENTRIES)


def entry(name: str) -> str:
    """The text of one command's entry, each line ending in a newline."""
    description, lines = ENTRIES[name]
    if name == "fim-help":
        listed = ",".join(c[len("fim-"):] for c in commands())
        lines = (*lines[:-1], ("note", f"Available commands: fim-{{{listed}}}"), lines[-1])
    out = [TITLE, f"{name} : {description}"]
    for line in lines:
        if line[0] == "arg":
            out.append(f"  <{line[1]}> : {line[2]}")
        else:
            out.append(PREFIX[line[0]] + line[1])
    return "\n".join(out) + "\n"


def main(ctx: Context, args: List[str]) -> int:
    if len(args) > 1:
        raise trailing("fim-help", args[1:])
    if not args:
        print(entry("fim-help"), end="")
        return 0
    name = args[0] if args[0].startswith("fim-") else "fim-" + args[0]
    if name not in commands():
        raise FimError(f"Invalid argument for help command: {args[0]}")
    print(entry(name), end="")
    return 0

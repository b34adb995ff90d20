"""FlatImage v2.0.1's texts and outputs, checked exactly (docs/compatibility.md): every
error line, the order of checks, the lines a successful command prints, the JSON of
fim-bind list, fim-boot show and fim-version full, list orders, and fim-help's layout.
Root and rootless; nothing here mounts unless a step runs a container."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import List, Sequence, Tuple

from conftest import Runner

from fim import __version__
from fim.runtime.commands import COMMANDS
from fim.runtime.commands import help as fim_help

# (arguments, exit code, stdout, stderr): one step of a command's story.
Step = Tuple[Sequence[str], int, str, str]


def fails(args: Sequence[str], message: str) -> Step:
    return (args, 125, "", f"E::{message}\n")


def says(args: Sequence[str], stdout: str = "") -> Step:
    return (args, 0, stdout, "")


def play(runner: Runner, image: Path, steps: List[Step]) -> None:
    for args, code, out, err in steps:
        before = image.read_bytes() if code else b""
        r = runner.run([str(image), *args], env={"FIM_KEEP": "0"})
        assert (r.returncode, r.stdout, r.stderr) == (code, out, err), args
        if code:
            assert image.read_bytes() == before, f"{args} changed the image"


ALL_PERMISSIONS = ["audio", "dbus_system", "dbus_user", "dev", "gpu", "home", "input", "media",
                   "network", "optical", "portal", "shm", "udev", "usb", "wayland", "xorg"]


def test_perms(image: Path, runner: Runner) -> None:
    p = "fim-perms"
    play(runner, image, [
        fails([p], "Missing op for fim-perms (add,del,list,set,clear)"),
        fails([p, "nope"], "Invalid perms operation"),
        fails([p, "add"], "No arguments for 'ADD' command"),
        fails([p, "del"], "No arguments for 'DEL' command"),
        fails([p, "set"], "No arguments for 'SET' command"),
        fails([p, "add", "hello"], "Invalid permission 'HELLO'"),
        fails([p, "add", "home,hello"], "Invalid permission 'HELLO'"),
        fails([p, "add", "none"], "Invalid permission 'NONE'"),
        # The names before the trailing arguments, those before `all` alone.
        fails([p, "add", "bogus", "world"], "Invalid permission 'BOGUS'"),
        fails([p, "add", "home", "world"], "Trailing arguments for fim-perms: ['world',]"),
        fails([p, "add", "all,home", "x"], "Trailing arguments for fim-perms: ['x',]"),
        fails([p, "add", "all,home"], "Permission 'all' should not be used with others"),
        fails([p, "list", "x"], "Trailing arguments for fim-perms: ['x',]"),
        says([p, "list"]),
        says([p, "add", "home,xorg,wayland,network"]),
        says([p, "list"], "home\nnetwork\nwayland\nxorg\n"),
        says([p, "add", "dbus_system,dbus_user"]),
        says([p, "list"], "dbus_system\ndbus_user\nhome\nnetwork\nwayland\nxorg\n"),
        says([p, "DEL", "HOME,Xorg"]),
        says([p, "list"], "dbus_system\ndbus_user\nnetwork\nwayland\n"),
        says([p, "set", "all"]),
        says([p, "list"], "".join(f"{n}\n" for n in ALL_PERMISSIONS)),
        says([p, "clear"]),
        says([p, "list"]),
    ])


def test_unshare(image: Path, runner: Runner) -> None:
    u = "fim-unshare"
    play(runner, image, [
        fails([u], "Missing op for fim-unshare (add,clear,del,list,set)"),
        fails([u, "x"], "Invalid unshare operation"),
        fails([u, "add"], "No arguments for 'ADD' command"),
        fails([u, "add", "invalid"], "Invalid unshare option 'INVALID'"),
        fails([u, "add", "ipc,none"], "Invalid unshare option 'NONE'"),
        fails([u, "add", "all,ipc"], "Unshare option 'all' should not be used with others"),
        fails([u, "list", "extra"], "Trailing arguments for fim-unshare: ['extra',]"),
        says([u, "add", "uts,ipc,pid"]),
        says([u, "list"], "ipc\npid\nuts\n"),
        says([u, "set", "all"]),
        says([u, "list"], "cgroup\nipc\nnet\npid\nuser\nuts\n"),
        says([u, "del", "net,user"]),
        says([u, "list"], "cgroup\nipc\npid\nuts\n"),
        says([u, "clear"]),
        says([u, "list"]),
    ])


def test_env(image: Path, runner: Runner) -> None:
    e = "fim-env"
    play(runner, image, [
        fails([e], "Missing op for 'fim-env' (add,del,list,set,clear)"),
        fails([e, "addd"], "Invalid env operation"),
        fails([e, "add"], "Missing arguments for 'ADD'"),
        fails([e, "set"], "Missing arguments for 'SET'"),
        fails([e, "del"], "Missing arguments for 'DEL'"),
        fails([e, "set", "IMADETHIS"], "Variable assignment 'IMADETHIS' is invalid"),
        fails([e, "set", "OK=1", "IMADETHIS", "HELLOWORLD"],
              "Variable assignment 'IMADETHIS' is invalid"),
        says([e, "set", "IMADE=THIS", "NO=IDID", "TEST=ME"],
             "Included variable 'IMADE' with value 'THIS'\n"
             "Included variable 'NO' with value 'IDID'\n"
             "Included variable 'TEST' with value 'ME'\n"),
        says([e, "add", "B=$TEST/x", "NO=again"],
             "Included variable 'B' with value '$TEST/x'\n"
             "Included variable 'NO' with value 'again'\n"),
        # Sorted by name, values expanded.
        says([e, "list"], "B=ME/x\nIMADE=THIS\nNO=again\nTEST=ME\n"),
        says([e, "del", "IMADE", "NOPE"], "Erase key 'IMADE'\nKey 'NOPE' not found for deletion\n"),
        says([e, "list"], "B=ME/x\nNO=again\nTEST=ME\n"),
        fails([e, "list", "foo"], "Trailing arguments for fim-env: ['foo',]"),
        fails([e, "clear", "foo"], "Trailing arguments for fim-env: ['foo',]"),
        says([e, "clear"]),
        says([e, "list"]),
    ])


ADD_USAGE = "Incorrect number of arguments for 'add' (<ro,rw,dev> <src> <dst>)"
DEL_USAGE = "Incorrect number of arguments for 'del' (<index>)"


def test_bind(image: Path, runner: Runner) -> None:
    b = "fim-bind"
    two = {"0": {"dst": "/b", "src": "/a", "type": "ro"},
           "1": {"dst": "/d", "src": "$HOME/c", "type": "rw"}}
    play(runner, image, [
        fails([b], "Missing op for 'fim-bind' command (add,del,list)"),
        fails([b, "nope"], "Invalid bind operation"),
        fails([b, "add"], ADD_USAGE),
        # The type is read first: a wrong one is named before the count is known.
        fails([b, "add", "bogus"], "Invalid bind type"),
        fails([b, "add", "ro", "/a"], ADD_USAGE),
        fails([b, "add", "ro", "/a", "/b", "/c"], ADD_USAGE),
        fails([b, "add", "ro", "/a", "rel"], "Destination 'rel' must be an absolute path"),
        fails([b, "del"], DEL_USAGE),
        fails([b, "del", "x"], "Index argument for 'del' is not a number"),
        fails([b, "del", "-1"], "Index argument for 'del' is not a number"),
        fails([b, "del", "0", "1"], DEL_USAGE),
        fails([b, "list", "x"], "'list' command takes no arguments"),
        says([b, "list"]),
        says([b, "del", "3"], "No element with index '3' found\n"),
        says([b, "add", "ro", "/a", "/b"], "Binding index is '0'\n"),
        says([b, "add", "RW", "$HOME/c", "/d"], "Binding index is '1'\n"),
        says([b, "list"], json.dumps(two, indent=2) + "\n"),
        says([b, "del", "0"], "Erase element with index '0'\n"),
        says([b, "list"], '{\n  "0": {\n    "dst": "/d",\n    "src": "$HOME/c",\n'
                          '    "type": "rw"\n  }\n}\n'),
    ])


def test_bind_list_sorts_indices_as_strings(image: Path, runner: Runner) -> None:
    for i in range(11):
        assert runner.run([str(image), "fim-bind", "add", "ro", f"/s{i}", f"/d{i}"]).returncode == 0
    r = runner.run([str(image), "fim-bind", "list"])
    keys = re.findall(r'^  "(\d+)": \{$', r.stdout, re.MULTILINE)
    assert keys == ["0", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]


def test_boot(image: Path, runner: Runner) -> None:
    b = "fim-boot"
    default = '{\n  "args": [],\n  "program": "sh"\n}\n'  # the busybox image has no bash
    play(runner, image, [
        fails([b], "Missing op for 'fim-boot' (<set|show|clear>)"),
        fails([b, "sett"], "Invalid boot operation"),
        fails([b, "set"], "Missing program for 'set' operation"),
        fails([b, "show", "x"], "Trailing arguments for fim-boot: ['x',]"),
        fails([b, "clear", "x", "y"], "Trailing arguments for fim-boot: ['x','y',]"),
        says([b, "show"], default),
        says(["fim-env", "add", "SHELL=/bin/ash"],
             "Included variable 'SHELL' with value '/bin/ash'\n"),
        says([b, "show"], '{\n  "args": [],\n  "program": "/bin/ash"\n}\n'),
        says(["fim-env", "clear"]),
        says([b, "set", "echo", "a b", "é"]),
        says([b, "show"], '{\n  "args": [\n    "a b",\n    "é"\n  ],\n  "program": "echo"\n}\n'),
        says([], "a b é\n"),
        says([b, "clear"]),
        says([b, "show"], default),
    ])


def test_casefold_overlay_instance_exec(image: Path, runner: Runner) -> None:
    c, o, i = "fim-casefold", "fim-overlay", "fim-instance"
    play(runner, image, [
        fails([c], "Incorrect number of arguments for 'fim-casefold' (<on|off>)"),
        fails([c, "maybe"], "Invalid casefold switch"),
        fails([c, "maybe", "x"], "Invalid casefold switch"),
        fails([c, "on", "x"], "Trailing arguments for fim-casefold: ['x',]"),
        says([c, "ON"]),
        says([c, "off"]),
        fails([o], "Missing op for 'fim-overlay' (<set|show>)"),
        fails([o, "x"], "Invalid overlay operation"),
        fails([i], "Missing op for 'fim-instance' (<exec|list>)"),
        fails([i, "x"], "Invalid instance operation"),
        fails([i, "exec"], "Missing 'id' argument for 'fim-instance'"),
        fails([i, "exec", "foo"], "Id argument must be a digit"),
        fails([i, "exec", "-1", "echo"], "Id argument must be a digit"),
        fails([i, "exec", "0"], "Missing 'cmd' argument for 'fim-instance'"),
        fails([i, "exec", "0", "echo", "hello"], "No instances are running"),
        fails([i, "list", "x"], "Trailing arguments for fim-instance: ['x',]"),
        says([i, "list"]),
        fails(["fim-exec"], "Incorrect number of arguments for fim-exec"),
        fails(["fim-root"], "Incorrect number of arguments for fim-root"),
        fails(["fim-nope"], "Unknown command: fim-nope"),
    ])


def test_version(image: Path, runner: Runner) -> None:
    v = "fim-version"
    play(runner, image, [
        fails([v], "Missing op for 'fim-version' (<short|full|deps>)"),
        fails([v, "x"], "Invalid version operation"),
        fails([v, "x", "y"], "Invalid version operation"),
        fails([v, "short", "y"], "Trailing arguments for fim-version: ['y',]"),
        says([v, "short"], f"v{__version__}\n"),
    ])
    r = runner.run([str(image), v, "full"])
    assert (r.returncode, r.stderr) == (0, "")
    full = json.loads(r.stdout)
    # FlatImage's formatting: two spaces, keys sorted.
    assert r.stdout == json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert full["VERSION"] == f"v{__version__}" and full["DISTRIBUTION"] == "BUSYBOX"
    assert re.fullmatch(r"[0-9a-f]{7}", full["COMMIT"]) and full["COMMIT"] == full["commit"]
    built = re.sub(r"\D", "", full["built"])
    assert re.fullmatch(r"\d{14}", full["TIMESTAMP"]) and full["TIMESTAMP"] == built
    assert {"build_id", "format_version", "version", "name"} <= set(full)


def test_layer(image: Path, runner: Runner, workdir: Path) -> None:
    lay = "fim-layer"
    source = workdir / "src"
    (source / "opt").mkdir(parents=True)
    (source / "opt" / "new").write_text("new\n")
    old = workdir / "out.layer"
    old.write_text("an older file of the same name\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(source), str(old)], check=True)
    gathering = "Gathering files to compress\n"
    play(runner, image, [
        fails([lay, "nope"], "Invalid layer operation"),
        fails([lay, "add"], "add requires exactly one argument (/path/to/file.layer)"),
        fails([lay, "add", "a", "b"], "add requires exactly one argument (/path/to/file.layer)"),
        fails([lay, "commit", "nope"], "Invalid commit operation"),
        fails([lay, "commit", "file"], "Missing path for 'file' operation"),
        fails([lay, "commit", "binary", "x"], "Trailing arguments for fim-layer commit: ['x',]"),
        fails([lay, "commit", "file", str(workdir / "new"), "y"],
              "Trailing arguments for fim-layer commit: ['y',]"),
        fails([lay, "commit", "file", str(old)], "Destination file already exists"),
        (["fim-layer", "create", str(source), str(workdir)], 125, gathering,
         f"E::Output '{workdir}' is a directory\n"),
        (["fim-layer", "create", str(source), str(image)], 125, gathering,
         f"E::Output '{image}' is the image itself\n"),
        # An existing output file is replaced, as FlatImage's is.
        says([lay, "create", str(source), str(old)],
             gathering + "Filesystem created without errors\n"),
    ])
    assert old.read_bytes()[:4] == b"hsqs"
    r = runner.run([str(image), "fim-exec", "cat", "/opt/new"], env={"FIM_LAYERS": str(old)})
    assert (r.returncode, r.stdout) == (0, "new\n"), r.stderr


# ---- fim-help: FlatImage's layout, every command

HELP_LINE = re.compile(r"(Usage|Note|Example): \S.*|  <[^>]+> : \S.*")


def layout_of(text: str, name: str) -> None:
    lines = text.splitlines()
    assert text.endswith("\n") and lines[0] == fim_help.TITLE
    assert re.fullmatch(re.escape(name) + r" : \S.*", lines[1]), lines[1]
    assert lines[2].startswith(("Usage: ", "Note: ")), lines[2]
    assert all(HELP_LINE.fullmatch(line) for line in lines[2:]), text
    assert any(line.startswith(f"Usage: {name}") for line in lines)


def test_help_covers_every_command() -> None:
    assert sorted(COMMANDS) == fim_help.commands()
    for name in COMMANDS:
        layout_of(fim_help.entry(name), name)
        # Each argument follows a usage line or another argument.
        kinds = [line.split(":")[0].strip() for line in fim_help.entry(name).splitlines()[2:]]
        for before, after in zip(kinds, kinds[1:]):
            assert not after.startswith("<") or before in ("Usage",) or before.startswith("<")


def test_help(image: Path, runner: Runner) -> None:
    listed = ",".join(sorted(name[len("fim-"):] for name in COMMANDS))
    r = runner.run([str(image), "fim-help"])
    assert (r.returncode, r.stderr) == (0, "")
    layout_of(r.stdout, "fim-help")
    assert f"Note: Available commands: fim-{{{listed}}}" in r.stdout.splitlines()
    for name in COMMANDS:
        short = runner.run([str(image), "fim-help", name[len("fim-"):]])
        full = runner.run([str(image), "fim-help", name])
        assert (short.returncode, short.stderr) == (0, "") and short.stdout == full.stdout
        layout_of(short.stdout, name)
    play(runner, image, [
        fails(["fim-help", "nope"], "Invalid argument for help command: nope"),
        fails(["fim-help", "bind", "x"], "Trailing arguments for fim-help: ['x',]"),
    ])


def test_commit_names_the_runtime_code(built_image: Path) -> None:
    """COMMIT is the digest of the runtime's files, the same for every build of one fim."""
    from fim.builder import payload

    digest = hashlib.sha256(payload.pack(payload.runtime_entries())).hexdigest()[:7]
    r = subprocess.run([str(built_image), "fim-version", "full"], capture_output=True, text=True)
    assert json.loads(r.stdout)["COMMIT"] == digest

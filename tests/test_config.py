"""Post-build configuration stored in the image: permissions, bindings, environment,
boot command, namespaces, instances, version and help. Root and rootless."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Runner

from fim.runtime.image import header
from fim.runtime.image.reserved import REGIONS


def fim(runner: Runner, image: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *args], env=env)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    return r.stdout


def usage_error(r: subprocess.CompletedProcess, text: str = "") -> None:
    assert (r.returncode, r.stdout) == (125, ""), (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("E::") and r.stderr.count("\n") == 1 and text in r.stderr


# ---- permissions

def test_perms_edit_and_list(image: Path, runner: Runner) -> None:
    assert ok(fim(runner, image, "fim-perms", "list")) == ""
    assert ok(fim(runner, image, "fim-perms", "add", "network,home")) == ""
    assert ok(fim(runner, image, "fim-perms", "add", "gpu")) == ""
    # Sorted by name, as FlatImage lists them.
    assert ok(fim(runner, image, "fim-perms", "list")).split() == ["gpu", "home", "network"]
    ok(fim(runner, image, "fim-perms", "del", "home"))
    assert ok(fim(runner, image, "fim-perms", "list")).split() == ["gpu", "network"]
    ok(fim(runner, image, "fim-perms", "set", "audio"))
    assert ok(fim(runner, image, "fim-perms", "list")).split() == ["audio"]
    ok(fim(runner, image, "fim-perms", "set", "all"))
    assert len(ok(fim(runner, image, "fim-perms", "list")).split()) == 16
    ok(fim(runner, image, "fim-perms", "clear"))
    assert ok(fim(runner, image, "fim-perms", "list")) == ""


@pytest.mark.parametrize("args,text", [
    (["add", "network,bogus"], "Invalid permission 'BOGUS'"),
    (["add", "all,home"], "Permission 'all' should not be used with others"),
    (["add"], "No arguments for 'ADD' command"),
    (["list", "x"], "Trailing arguments for fim-perms: ['x',]"),
    ([], "Missing op for fim-perms (add,del,list,set,clear)"),
])
def test_perms_usage_errors(image: Path, runner: Runner, args: list, text: str) -> None:
    before = image.read_bytes()
    usage_error(fim(runner, image, "fim-perms", *args), text)
    assert image.read_bytes() == before


def test_network_only_with_permission(image: Path, runner: Runner) -> None:
    count = "grep -c : /proc/net/dev"
    interfaces = int(ok(fim(runner, image, "fim-exec", "sh", "-c", count)))
    assert interfaces == 1  # loopback only
    ok(fim(runner, image, "fim-perms", "add", "network"))
    with open("/proc/net/dev") as f:
        host = sum(1 for line in f if ":" in line)
    assert int(ok(fim(runner, image, "fim-exec", "sh", "-c", count))) == host
    resolv = ok(fim(runner, image, "fim-exec", "cat", "/etc/resolv.conf"))
    with open(os.path.realpath("/etc/resolv.conf")) as f:
        assert resolv == f.read()


def test_home_only_with_permission(image: Path, runner: Runner, workdir: Path) -> None:
    home = workdir / "home"
    home.mkdir()
    (home / "secret").write_text("host file\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(home)], check=True)
    script = f"cat {home}/secret 2>/dev/null || echo invisible; echo HOME=$HOME"
    out = ok(fim(runner, image, "fim-exec", "sh", "-c", script, HOME=str(home)))
    assert out.splitlines()[0] == "invisible" and out.splitlines()[1] != f"HOME={home}"
    ok(fim(runner, image, "fim-perms", "add", "home"))
    out = ok(fim(runner, image, "fim-exec", "sh", "-c", script, HOME=str(home)))
    assert out.splitlines() == ["host file", f"HOME={home}"]


def test_no_devices_or_sockets_without_permissions(image: Path, runner: Runner) -> None:
    out = ok(fim(runner, image, "fim-exec", "sh", "-c",
                 "ls /dev; ls /tmp/.X11-unix /run/dbus /dev/dri 2>&1 | grep -c 'No such'"))
    assert out.splitlines()[-1] == "3"
    assert "dri" not in out.split() and "snd" not in out.split()


# ---- bindings

def test_bindings(image: Path, runner: Runner, workdir: Path) -> None:
    shared = workdir / "shared"
    shared.mkdir()
    (shared / "in").write_text("from host\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(shared)], check=True)
    assert ok(fim(runner, image, "fim-bind", "add", "ro", "$SHARED", "/mnt/ro")) == \
        "Binding index is '0'\n"
    assert ok(fim(runner, image, "fim-bind", "add", "rw", str(shared), "/mnt/rw")) == \
        "Binding index is '1'\n"
    listed = json.loads(ok(fim(runner, image, "fim-bind", "list")))
    assert listed == {"0": {"type": "ro", "src": "$SHARED", "dst": "/mnt/ro"},
                      "1": {"type": "rw", "src": str(shared), "dst": "/mnt/rw"}}
    script = ("cat /mnt/ro/in; (echo x > /mnt/ro/w) 2>/dev/null || echo refused;"
              " echo w > /mnt/rw/out")
    out = ok(fim(runner, image, "fim-exec", "sh", "-c", script, SHARED=str(shared)))
    assert out == "from host\nrefused\n"
    assert (shared / "out").read_text() == "w\n"
    ok(fim(runner, image, "fim-bind", "del", "0"))
    assert list(json.loads(ok(fim(runner, image, "fim-bind", "list"))).values()) == [
        {"type": "rw", "src": str(shared), "dst": "/mnt/rw"}]


@pytest.mark.parametrize("args,text", [
    (["add", "ro", "/a"], "Incorrect number of arguments for 'add' (<ro,rw,dev> <src> <dst>)"),
    (["add", "xx", "/a", "/b"], "Invalid bind type"),
    (["del", "x"], "Index argument for 'del' is not a number"),
])
def test_bind_usage_errors(image: Path, runner: Runner, args: list, text: str) -> None:
    usage_error(fim(runner, image, "fim-bind", *args), text)


# ---- environment

def test_environment(image: Path, runner: Runner) -> None:
    ok(fim(runner, image, "fim-env", "add", "GREETING=hello", "WHERE=$PLACE"))
    ok(fim(runner, image, "fim-env", "add", "GREETING=hi"))
    # Sorted by name, values expanded, as FlatImage lists them.
    assert ok(fim(runner, image, "fim-env", "list", PLACE="there")).splitlines() == [
        "GREETING=hi", "WHERE=there"]
    out = ok(fim(runner, image, "fim-exec", "sh", "-c", "echo $GREETING $WHERE", PLACE="home"))
    assert out == "hi home\n"
    ok(fim(runner, image, "fim-env", "del", "WHERE"))
    assert ok(fim(runner, image, "fim-env", "list")) == "GREETING=hi\n"
    ok(fim(runner, image, "fim-env", "set", "ONLY=1"))
    assert ok(fim(runner, image, "fim-env", "list")) == "ONLY=1\n"
    ok(fim(runner, image, "fim-env", "clear"))
    assert ok(fim(runner, image, "fim-env", "list")) == ""
    usage_error(fim(runner, image, "fim-env", "add", "NOEQUALS"),
                "Variable assignment 'NOEQUALS' is invalid")


def test_host_environment_passes_but_path_is_the_containers(image: Path, runner: Runner) -> None:
    out = ok(fim(runner, image, "fim-exec", "sh", "-c", "echo $LANG:$PATH", LANG="xx_YY.UTF-8"))
    # The container's PATH; last, the directory of the portal's client (docs/runtime.md).
    assert out == ("xx_YY.UTF-8:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                   ":/tmp/.fim-portal\n")


def test_oversized_value_is_refused_and_old_value_kept(image: Path, runner: Runner) -> None:
    ok(fim(runner, image, "fim-env", "add", "KEEP=1"))
    # Arguments are limited to 128 KiB each: nine of 120 KB exceed the 1 MiB region.
    big = [f"BIG{i}=" + "x" * 120_000 for i in range(9)]
    usage_error(fim(runner, image, "fim-env", "add", *big), "too large")
    assert ok(fim(runner, image, "fim-env", "list")) == "KEEP=1\n"


def test_corrupted_region_is_reported_and_the_image_still_runs(image: Path,
                                                               runner: Runner) -> None:
    head = header.read(str(image))
    with open(image, "r+b") as f:
        f.seek(head.reserved_offset + REGIONS["environment"].offset)
        f.write(b"{not json at all\xff")
        f.seek(head.reserved_offset + REGIONS["bindings"].offset)
        f.write(b"[[[")
    usage_error(fim(runner, image, "fim-env", "list"), "corrupted")
    usage_error(fim(runner, image, "fim-bind", "list"), "corrupted")
    assert ok(fim(runner, image, "fim-exec", "echo", "runs")) == "runs\n"
    ok(fim(runner, image, "fim-env", "set", "FRESH=1"))
    assert ok(fim(runner, image, "fim-exec", "sh", "-c", "echo $FRESH")) == "1\n"


# ---- boot command

def test_boot_command(image: Path, runner: Runner) -> None:
    # Unset: the default, as FlatImage shows it (the busybox image has no bash).
    assert json.loads(ok(fim(runner, image, "fim-boot", "show"))) == {"program": "sh",
                                                                        "args": []}
    ok(fim(runner, image, "fim-boot", "set", "echo", "booted"))
    assert json.loads(ok(fim(runner, image, "fim-boot", "show"))) == {"program": "echo",
                                                                        "args": ["booted"]}
    assert ok(runner.run([str(image)])) == "booted\n"
    assert ok(runner.run([str(image), "with", "args"])) == "booted with args\n"
    ok(fim(runner, image, "fim-boot", "clear"))
    assert ok(runner.run([str(image), "-c", "echo shell"])) == "shell\n"


# ---- namespaces

def test_unshare(image: Path, runner: Runner) -> None:
    host_uts = os.readlink("/proc/self/ns/uts")
    host_ipc = os.readlink("/proc/self/ns/ipc")
    script = "readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc"
    before = ok(fim(runner, image, "fim-exec", "sh", "-c", script)).split()
    if runner.user is None:
        assert before == [host_uts, host_ipc]
    ok(fim(runner, image, "fim-unshare", "add", "uts,ipc"))
    assert ok(fim(runner, image, "fim-unshare", "list")).split() == ["ipc", "uts"]
    after = ok(fim(runner, image, "fim-exec", "sh", "-c", script)).split()
    assert after[0] != before[0] and after[1] != before[1]
    usage_error(fim(runner, image, "fim-unshare", "add", "mars"), "Invalid unshare option 'MARS'")
    ok(fim(runner, image, "fim-unshare", "clear"))
    assert ok(fim(runner, image, "fim-unshare", "list")) == ""


# ---- instances

def test_instance_list_and_exec(image: Path, runner: Runner) -> None:
    assert ok(fim(runner, image, "fim-instance", "list")) == ""
    proc = runner.popen([str(image), "fim-exec", "sh", "-c", "echo inside > /tmp/mark; sleep 6"])
    try:
        deadline = time.monotonic() + 10
        listed = ""
        while time.monotonic() < deadline and not listed:
            listed = ok(fim(runner, image, "fim-instance", "list"))
            time.sleep(0.2)
        assert listed.split(":")[0] == "0"
        time.sleep(0.5)
        # The instance's private /tmp is only visible from inside it.
        r = fim(runner, image, "fim-instance", "exec", "0", "cat", "/tmp/mark")
        assert (r.returncode, r.stdout) == (0, "inside\n"), r.stderr
        r = fim(runner, image, "fim-instance", "exec", "0", "sh", "-c", "exit 9")
        assert r.returncode == 9
        usage_error(fim(runner, image, "fim-instance", "exec", "5", "true"),
                    "Instance index out of bounds")
    finally:
        proc.wait(timeout=30)
    assert ok(fim(runner, image, "fim-instance", "list")) == ""


# ---- version and help

def test_version(image: Path, runner: Runner) -> None:
    from fim import __version__

    assert ok(fim(runner, image, "fim-version", "short")) == f"v{__version__}\n"
    full = json.loads(ok(fim(runner, image, "fim-version", "full")))
    assert full["distribution"] == "fim busybox"
    assert (full["VERSION"], full["DISTRIBUTION"]) == (f"v{__version__}", "BUSYBOX")
    assert full["build_id"] == header.read(str(image)).build_id
    deps = json.loads(ok(fim(runner, image, "fim-version", "deps")))
    assert deps["bwrap"]["copy"] == "embedded" and "0.11" in deps["bwrap"]["version"]
    assert deps["squashfuse_ll"]["copy"] == "embedded"


def test_help(image: Path, runner: Runner) -> None:
    out = ok(fim(runner, image, "fim-help"))
    for command in ("exec", "root", "overlay", "layer", "perms", "bind", "env", "boot",
                    "instance", "unshare", "remote", "recipe", "version", "help"):
        assert command in out.splitlines()[-2]  # Note: Available commands: fim-{...}
    assert ok(fim(runner, image, "fim-help", "bind")).splitlines()[1].startswith("fim-bind : ")

"""sandbox: the bubblewrap command line and environment, from explicit values."""

from __future__ import annotations

from fim.runtime import sandbox
from fim.runtime.image.settings import Binding

USER = sandbox.Identity(1000, 1000, "ann", "/home/ann", "/bin/sh")


def _box(**kw: object) -> sandbox.Sandbox:
    values: dict = dict(bwrap=["/x/bwrap"], root_args=["--bind", "/m", "/"], identity=USER,
                        passwd="/i/passwd", group="/i/group", chdir="/home/ann", status_fd=5,
                        program=["prog", "a b"])
    values.update(kw)
    return sandbox.Sandbox(**values)


def _pairs(argv: list, flag: str) -> list:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_default_sandbox_has_no_network_and_fresh_tmp() -> None:
    argv = sandbox.argv(_box())
    assert argv[0] == "/x/bwrap"
    assert "--unshare-net" in argv
    # The PID namespace and its init are reaper.py's, and bubblewrap must not take
    # the program down with it.
    assert "--unshare-pid" not in argv and "--die-with-parent" not in argv
    assert argv[argv.index("--uid") + 1] == "1000" and argv[argv.index("--gid") + 1] == "1000"
    assert _pairs(argv, "--tmpfs") == ["/tmp"]
    assert argv[argv.index("--ro-bind") + 1:argv.index("--ro-bind") + 3] == ["/sys", "/sys"]
    assert argv[-3:] == ["--", "prog", "a b"]
    assert argv[argv.index("--json-status-fd") + 1] == "5"
    assert argv[argv.index("--chdir") + 1] == "/home/ann"


def test_root_args_come_before_the_mounts_on_top_of_them() -> None:
    argv = sandbox.argv(_box())
    assert argv.index("--bind") < argv.index("--proc") < argv.index("--dev")


def test_network_shared_unless_net_is_unshared() -> None:
    assert "--unshare-net" not in sandbox.argv(_box(share_network=True))
    assert "--unshare-net" in sandbox.argv(_box(share_network=True, unshare=["net"]))


def test_more_namespaces() -> None:
    argv = sandbox.argv(_box(unshare=["ipc", "uts", "cgroup", "user", "pid"]))
    assert "--unshare-ipc" in argv and "--unshare-uts" in argv
    assert "--unshare-cgroup-try" in argv


def test_extra_arguments_follow_the_defaults() -> None:
    argv = sandbox.argv(_box(extra=["--bind", "/h", "/c"]))
    assert argv.index("/h") > argv.index("--dev")


def test_bindings_expand_sources_only() -> None:
    args = sandbox.bind_args([Binding("ro", "$HOME/x", "/$HOME"), Binding("dev", "/dev/a", "/d"),
                              Binding("rw", "${A}b", "/c")], {"HOME": "/home/ann", "A": "a"})
    assert args == ["--ro-bind", "/home/ann/x", "/$HOME", "--dev-bind", "/dev/a", "/d",
                    "--bind", "ab", "/c"]


def test_expand() -> None:
    env = {"A": "1", "B_2": "x"}
    assert sandbox.expand("$A-${B_2}-$C-${C}-$", env) == "1-x-$C-${C}-$"
    assert sandbox.expand("${A", env) == "${A"


def test_environment_layers() -> None:
    host = {"PATH": "/host", "HOME": "/root", "LANG": "C.UTF-8", "X": "host"}
    env = sandbox.environment(host, USER, {"FIM_DIR_DATA": "/d"}, {"X": "granted"},
                              ["Y=$LANG", "X=mine"])
    assert env["PATH"] == sandbox.CONTAINER_PATH
    assert (env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"]) == (
        "/home/ann", "ann", "ann", "/bin/sh")
    assert env["LANG"] == "C.UTF-8" and env["FIM_DIR_DATA"] == "/d"
    assert env["X"] == "mine" and env["Y"] == "C.UTF-8"
    assert host["PATH"] == "/host"


def test_passwd_and_group_hold_one_entry_for_the_identity() -> None:
    container = "root:x:0:0:root:/root:/bin/sh\nann:x:5:5::/:/bin/false\nbob:x:1000:1:::\n"
    text = sandbox.passwd_text(container, USER)
    assert text.splitlines() == ["root:x:0:0:root:/root:/bin/sh",
                                 "ann:x:1000:1000:ann:/home/ann:/bin/sh"]
    assert sandbox.group_text(None, USER) == "ann:x:1000:\n"


def test_parse_status() -> None:
    text = '{ "child-pid": 12 }\n{ "exit-code": 7 }\n'
    assert sandbox.parse_status(text) == (12, 7)
    assert sandbox.parse_status('{ "child-pid": 3 }\n') == (3, None)
    assert sandbox.parse_status("") == (None, None)

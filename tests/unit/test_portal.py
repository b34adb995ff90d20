"""The portal without a container: what a call's environment and directory are, what
the permission binds, what the payload carries, and the protocol itself between the
real client script (under dash and busybox sh) and a real dispatcher on a directory
of the test's own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from fim.builder import payload
from fim.runtime import permissions, portal, process
from fim.runtime.image.settings import PERMISSIONS
from fim.runtime.portal import host

SHELLS = [s for s in (["dash"], ["busybox", "sh"]) if shutil.which(s[0])]


# ---- the call's environment and directory


def test_the_container_keeps_its_own_places_and_identity() -> None:
    for name in ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "TMPDIR", "XAUTHORITY",
                 "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "XDG_DATA_DIRS",
                 "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "FIM_DIR_INSTANCE"):
        assert host.containers_own(name), name
    for name in ("FOO", "DISPLAY", "WAYLAND_DISPLAY", "LANG", "LC_ALL", "TERM",
                 "DBUS_SESSION_BUS_ADDRESS", "BROWSER"):
        assert not host.containers_own(name), name


def test_environment_is_the_hosts_with_the_callers_variables() -> None:
    env = host.environment({"PATH": "/host/bin", "HOME": "/home/me", "LANG": "C", "KEEP": "1"},
                           {"PATH": "/usr/bin", "HOME": "/home/inside", "LANG": "fr_FR.UTF-8",
                            "FOO": "bar", "LD_PRELOAD": "/x.so"})
    assert env == {"PATH": "/host/bin", "HOME": "/home/me", "LANG": "fr_FR.UTF-8", "KEEP": "1",
                   "FOO": "bar"}


def test_workdir_is_the_callers_when_the_host_has_it(tmp_path: Path) -> None:
    assert host.workdir(str(tmp_path), {"HOME": "/"}) == str(tmp_path)
    assert host.workdir(str(tmp_path / "nope"), {"HOME": str(tmp_path)}) == str(tmp_path)
    assert host.workdir(str(tmp_path / "nope"), {"HOME": str(tmp_path / "no")}) == "/"
    assert host.workdir("relative", {}) == "/"


def test_parse_keeps_every_argument() -> None:
    req = host.parse(b"sh\0-c\0\0a b\nc\0", b"FOO=x=y\0junk\0=v\0", b"/", {"PATH": "/bin"})
    assert req.argv == ["sh", "-c", "", "a b\nc"]
    assert req.env == {"PATH": "/bin", "FOO": "x=y"}
    assert req.cwd == "/"
    for argv in (b"", b"\0"):
        with pytest.raises(ValueError):
            host.parse(argv, b"", b"/", {})


def test_call_names_stay_in_their_directory() -> None:
    assert host.valid_name("12.0")
    for name in ("", ".", "..", "../x", "a", "1/2", "1" * 41):
        assert not host.valid_name(name), name


# ---- what the permission binds


def test_the_client_is_always_there_the_directory_only_with_the_permission() -> None:
    ends = portal.Ends("/rt/fim_portal.sh", "/inst/portal")
    off = permissions.grant(0, {}, 1000, portal=ends)
    assert off.options == [("--ro-bind-try", "/rt/fim_portal.sh", portal.CLIENT)]
    assert off.appended["PATH"] == (portal.CONTAINER_DIR, "")
    on = permissions.grant(PERMISSIONS.parse("portal"), {}, 1000, portal=ends)
    assert ("--bind", "/inst/portal", portal.HOST_DIR) in on.options
    assert permissions.grant(PERMISSIONS.parse("portal"), {}, 1000).options == []


def test_the_client_comes_last_on_path() -> None:
    appended = {"PATH": ("/run/host-gpu/bin", "")}
    permissions._portal(0, portal.Ends("c", "d"), [], appended)
    assert appended["PATH"] == (f"/run/host-gpu/bin:{portal.CONTAINER_DIR}", "")


def test_the_client_names_the_directory_bound() -> None:
    text = Path(portal.CLIENT_SOURCE).read_text()
    assert f"\nportal={portal.HOST_DIR}\n" in text
    assert portal.CLIENT.startswith(portal.CONTAINER_DIR + "/")


def test_the_payload_carries_the_client_as_a_program() -> None:
    entries = {name: (mode, data) for name, mode, data in payload.runtime_entries()}
    mode, data = entries["fim/runtime/portal/fim_portal.sh"]
    assert mode == 0o755 and data == Path(portal.CLIENT_SOURCE).read_bytes()
    assert "fim/runtime/portal/host.py" in entries


# ---- the protocol


@pytest.fixture
def client(tmp_path: Path) -> Path:
    """The client script, pointed at a portal directory under tmp_path."""
    where = tmp_path / "portal"
    script = tmp_path / "fim_portal"
    text = Path(portal.CLIENT_SOURCE).read_text()
    script.write_text(text.replace(f"\nportal={portal.HOST_DIR}\n", f"\nportal={where}\n"))
    script.chmod(0o755)
    return script


@pytest.fixture
def dispatcher(tmp_path: Path, client: Path) -> Iterator[int]:
    where = tmp_path / "portal"
    (where / host.CALLS).mkdir(parents=True)
    os.mkfifo(where / host.REQUESTS)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    me = os.getpid()
    pid = process.fork(lambda: host.dispatch(str(where), env, 1.0, me, ["test", "fim-portal"]))
    yield pid
    process.kill([pid], signal.SIGKILL)
    process.wait(pid)


def _call(shell: List[str], client: Path, args: List[str], stdin: bytes = b"",
          env: object = None) -> subprocess.CompletedProcess:
    return subprocess.run(shell + [str(client)] + args, input=stdin, capture_output=True,
                          timeout=60, env=env)  # type: ignore[arg-type]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_a_call_carries_streams_code_and_variables(shell: List[str], client: Path,
                                                   dispatcher: int, tmp_path: Path) -> None:
    r = _call(shell, client, ["sh", "-c", "cat; echo err >&2; exit 5"], b"in\0put")
    assert (r.returncode, r.stdout, r.stderr) == (5, b"in\0put", b"err\n")
    r = _call(shell, client, ["sh", "-c", 'printf "%s|" "$@"; echo "$FOO"', "x", "", "a b"],
              env={**os.environ, "FOO": "bar"})
    assert (r.returncode, r.stdout) == (0, b"|a b|bar\n"), r.stderr
    assert os.listdir(tmp_path / "portal" / host.CALLS) == []  # the client cleans up


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_closed_portal_and_usage(shell: List[str], tmp_path: Path, client: Path) -> None:
    marker = tmp_path / "ran"
    r = _call(shell, client, ["touch", str(marker)])
    assert (r.returncode, r.stdout) == (125, b"")
    assert r.stderr == (b"E::The portal is closed: this image was not given the 'portal' "
                        b"permission (fim-perms add portal)\n")
    assert not marker.exists()
    r = _call(shell, client, [])
    assert r.returncode == 125 and r.stderr.startswith(b"E::Usage: fim_portal")

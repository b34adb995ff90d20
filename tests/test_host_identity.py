"""At home on the host: the container's user shaped by fim-env (UID, GID, USER, HOME,
SHELL) as FlatImage does, PS1 reaching bash's prompt, FlatImage's variables inside,
fim-env values expanded as a shell user expects, FIM_LAYERS entries that are gone.
Root and rootless."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Runner


def run(runner: Runner, image: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *argv], env={"FIM_KEEP": "0", **env})


def ok(runner: Runner, image: Path, *argv: str, **env: str) -> str:
    r = run(runner, image, *argv, **env)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return r.stdout


def test_identity_from_fim_env(image: Path, runner: Runner) -> None:
    ok(runner, image, "fim-env", "add", "UID=1234", "GID=77", "USER=player",
       "HOME=/home/player", "SHELL=/bin/ash")
    out = ok(runner, image, "fim-exec", "sh", "-c",
             'id -u; id -g; whoami; echo "$HOME" "$SHELL"; grep ^player: /etc/passwd; pwd')
    assert out.splitlines() == ["1234", "77", "player", "/home/player /bin/ash",
                                "player:x:1234:77:player:/home/player:/bin/ash",
                                "/home/player"]
    # fim-root stays uid 0, whatever the image says.
    assert ok(runner, image, "fim-root", "sh", "-c", "id -u; whoami") == "0\nroot\n"
    # Files made inside are the caller's on the host, as always.
    ok(runner, image, "fim-exec", "sh", "-c", "echo x > /opt/made")
    made = image.parent / f".{image.name}.data" / "data/opt/made"
    assert made.stat().st_uid == runner.uid


def test_invalid_identity_values_fall_back_with_a_warning(image: Path, runner: Runner) -> None:
    ok(runner, image, "fim-env", "add", "UID=abc", "GID=-3", "USER=a:b", "HOME=relative",
       "SHELL=/bin/nope")
    r = run(runner, image, "fim-exec", "sh", "-c", "id -u; id -g; echo $HOME $SHELL")
    assert r.returncode == 0
    warnings = r.stderr.splitlines()
    assert len(warnings) == 5 and all(w.startswith("W::Ignoring ") for w in warnings), r.stderr
    for name in ("UID='abc'", "GID='-3'", "USER='a:b'", "HOME='relative'", "SHELL='/bin/nope'"):
        assert any(name in w for w in warnings), name
    uid = runner.uid
    home = "/root" if uid == 0 else f"/home/{runner.user}"
    assert r.stdout.split() == [str(uid), str(uid if uid else 0), home, "/bin/sh"]


def test_flatimage_variables_inside(image: Path, runner: Runner) -> None:
    out = ok(runner, image, "fim-exec", "sh", "-c", "env | grep ^FIM_ | sort")
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["FIM_DIST"] == "BUSYBOX"
    assert got["FIM_VERSION"] == ok(runner, image, "fim-version", "short").strip()
    assert got["FIM_TIMESTAMP"].isdigit() and len(got["FIM_TIMESTAMP"]) == 14
    assert got["FIM_BIN_SELF"] == str(image)
    assert got["FIM_DIR_INSTANCE"].endswith("/instance/" + got["FIM_PID"])
    assert os.path.basename(got["FIM_DIR_APP_BIN"]) == "bin"
    # The first embedded layer's offset, as fim-layer list gives it (index:offset:size:path).
    first = ok(runner, image, "fim-layer", "list").splitlines()[0].split(":")
    assert got["FIM_OFFSET"] == first[1]
    for absent in ("FIM_COMMIT", "FIM_DIR_RUNTIME", "FIM_DIR_RUNTIME_HOST"):
        assert absent not in got


def test_environment_expansion(image: Path, runner: Runner) -> None:
    ok(runner, image, "fim-env", "add", "A=1", "B=$A-x", "C=${FROM_HOST}/${B}", "D=[$NOPE]",
       "E=$(id -u)", "F=${UNCLOSED")
    out = ok(runner, image, "fim-exec", "sh", "-c",
             'printf "%s\\n" "$B" "$C" "$D" "$E" "$F"', FROM_HOST="h")
    assert out.splitlines() == ["1-x", "h/1-x", "[]", "$(id -u)", "${UNCLOSED"]


def test_missing_fim_layers_entries_warn_and_run(image: Path, runner: Runner,
                                                 workdir: Path) -> None:
    bogus = workdir / "not-a-layer"
    bogus.write_text("text\n")
    r = run(runner, image, "fim-exec", "cat", "/opt/base/keep",
            FIM_LAYERS=f"{workdir}/gone.layer:{bogus}")
    assert (r.returncode, r.stdout) == (0, "keep\n")
    assert r.stderr.splitlines() == [
        f"W::Ignoring '{workdir}/gone.layer' of FIM_LAYERS: it does not exist",
        f"W::Ignoring '{bogus}' of FIM_LAYERS: it is not a layer (SquashFS or DwarFS)",
    ]


def _prompt_of(argv: list, env: dict, uid: int) -> str:
    """What an interactive shell prints on a real terminal before `exit`."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the runner and start the shell
        try:
            if uid:
                os.setgid(uid)
                os.setuid(uid)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"fim-prompt>" in out:
            os.write(fd, b"exit\n")
            sent = True
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace")


@pytest.mark.slow
def test_ps1_reaches_bash(debian_image: Path, runner: Runner, workdir: Path) -> None:
    image = workdir / "debian.flatimage"
    image.write_bytes(debian_image.read_bytes())
    image.chmod(0o755)
    os.chown(image, runner.uid, -1)
    ok(runner, image, "fim-env", "add", "WHO=fim", 'PS1="[$WHO] \\W fim-prompt> "')
    env = {k: v for k, v in os.environ.items() if k not in ("FIM_DEBUG", "FIM_OVERLAY")}
    env.update(FIM_KEEP="0", TERM="dumb")
    if runner.user is not None:
        env.update(HOME=f"/home/{runner.user}", USER=runner.user)
    # fim-exec bash, and the boot default (the container's shell, bash here).
    for argv in ([str(image), "fim-exec", "bash"], [str(image)]):
        shown = _prompt_of(argv, env, runner.uid)
        assert "[fim] " in shown and "fim-prompt> " in shown, shown

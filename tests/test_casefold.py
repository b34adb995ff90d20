"""fim-casefold on real images: a case-insensitive, case-preserving root over the
FUSE overlays, as root and as an ordinary user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Runner

from fim.runtime.image import header
from fim.runtime.image.reserved import REGIONS

BACKENDS = ["unionfs", "overlayfs"]


def fim(runner: Runner, image: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *args], env=env)


def sh(runner: Runner, image: Path, script: str, backend: str = "unionfs",
       root: bool = False) -> subprocess.CompletedProcess:
    return fim(runner, image, "fim-root" if root else "fim-exec", "sh", "-c", script,
               FIM_OVERLAY=backend)


def casefold_byte(image: Path) -> int:
    head = header.read(str(image))
    with open(image, "rb") as f:
        f.seek(head.reserved_offset + REGIONS["casefold"].offset)
        return f.read(1)[0]


def test_flag_command(image: Path, runner: Runner) -> None:
    assert fim(runner, image, "fim-casefold", "on").returncode == 0
    assert casefold_byte(image) == 1
    assert fim(runner, image, "fim-casefold", "off").returncode == 0
    assert casefold_byte(image) == 0
    for args in ([], ["maybe"], ["on", "x"]):
        r = fim(runner, image, "fim-casefold", *args)
        assert r.returncode == 125 and r.stderr.startswith("E::") and r.stdout == ""


@pytest.mark.parametrize("backend", BACKENDS + ["bwrap"])
def test_lookups_ignore_case_and_names_keep_theirs(image: Path, runner: Runner,
                                                    backend: str) -> None:
    fim(runner, image, "fim-casefold", "on")
    r = sh(runner, image, "mkdir -p /hElLo/WoRlD && stat -c %n /hello/world /HELLO/WORLD"
           " && ls / | grep -i hello", backend)
    assert (r.returncode, r.stdout.split(), r.stderr) == (
        0, ["/hello/world", "/HELLO/WORLD", "hElLo"], "")
    # Persisted, and still found by any spelling in the next run.
    r = sh(runner, image, "ls -d /HELLO/world; ls /hello", backend)
    assert r.stdout.split() == ["/HELLO/world", "WoRlD"]


def test_off_is_case_sensitive_again(image: Path, runner: Runner) -> None:
    fim(runner, image, "fim-casefold", "on")
    assert sh(runner, image, "mkdir -p /hElLo/WoRlD").returncode == 0
    fim(runner, image, "fim-casefold", "off")
    r = sh(runner, image, "ls -d /hElLo/WoRlD; stat /hello/world 2>/dev/null || echo absent")
    assert r.stdout.split() == ["/hElLo/WoRlD", "absent"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_rename_and_unicode(image: Path, runner: Runner, backend: str) -> None:
    fim(runner, image, "fim-casefold", "on")
    script = (
        "cd /opt && echo first > readme.txt && echo second > README.TXT && cat readme.txt"
        " && ls | grep -ic readme && mv readme.txt ReadMe.txt && ls | grep -i readme"
        " && echo x > 'ÉTÉ' && cat 'été' && echo y > STRASSE && cat straße"
    )
    r = sh(runner, image, script, backend, root=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["second", "1", "ReadMe.txt", "x", "y"]


def test_names_differing_only_by_case_in_a_layer(image: Path, runner: Runner,
                                                 workdir: Path) -> None:
    src = workdir / "src"
    (src / "opt/pair").mkdir(parents=True)
    (src / "opt/pair/Data.txt").write_text("upper\n")
    (src / "opt/pair/data.txt").write_text("lower\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    layer = workdir / "pair.layer"
    assert fim(runner, image, "fim-layer", "create", str(src), str(layer)).returncode == 0
    assert fim(runner, image, "fim-layer", "add", str(layer)).returncode == 0
    fim(runner, image, "fim-casefold", "on")
    r = sh(runner, image, "cd /opt/pair; cat Data.txt data.txt DATA.TXT dAtA.tXt; ls")
    # Exact names reach each file; other spellings reach the first real name in
    # sorted order ("Data.txt" sorts before "data.txt").
    assert r.stdout.split() == ["upper", "lower", "upper", "upper", "Data.txt", "data.txt"]


def test_wine_like_access(image: Path, runner: Runner) -> None:
    fim(runner, image, "fim-casefold", "on")
    make = (
        "mkdir -p /opt/Game/Data/Textures /opt/Game/Sounds && cd /opt/Game"
        " && for n in Sky.DDS Grass.dds ROCK.Dds; do echo $n > Data/Textures/$n; done"
        " && echo boom > Sounds/Explosion.WAV && echo cfg > Game.INI"
        " && tar -cf /tmp/game.tar -C /opt Game && rm -rf /opt/Game"
        " && mkdir /opt/game && tar -xf /tmp/game.tar -C /opt"
    )
    assert sh(runner, image, make, root=True).returncode == 0
    read = ("cat /opt/game/data/textures/sky.dds /OPT/GAME/DATA/TEXTURES/GRASS.DDS"
            " /opt/GAME/data/Textures/rock.dds /opt/game/sounds/explosion.wav /opt/game/game.ini")
    r = sh(runner, image, read)
    assert r.stdout.split() == ["Sky.DDS", "Grass.dds", "ROCK.Dds", "boom", "cfg"], r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_commit(image: Path, runner: Runner, backend: str) -> None:
    fim(runner, image, "fim-casefold", "on")
    assert sh(runner, image, "mkdir -p /opt/MixedCase && echo kept > /opt/MixedCase/File",
              backend, root=True).returncode == 0
    r = fim(runner, image, "fim-layer", "commit", "binary")
    assert r.returncode == 0, r.stderr
    r = sh(runner, image, "cat /opt/mixedcase/FILE; ls /opt | grep -i mixed", backend)
    assert r.stdout.split() == ["kept", "MixedCase"]


STACK = r"""set -e
for layer in 1 2 3; do
  ./app.flatimage fim-root sh -c "mkdir -p /opt/L$layer && for i in \$(seq 1 40); do
    echo L$layer-\$i > /opt/L$layer/F\$i; done; ln /opt/L$layer/F1 /opt/L$layer/Hard"
  ./app.flatimage fim-layer commit binary >/dev/null
done
./app.flatimage fim-casefold on
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_layers_whose_files_share_inode_numbers(image: Path, runner: Runner,
                                                        backend: str) -> None:
    """Each layer numbers its files from 1, and fuse-overlayfs passes the numbers
    through: files of three layers share them. Casefold must keep them apart."""
    r = runner.run(["sh", "-ec", STACK], cwd=image.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    check = sh(runner, image, "stat -c '%i %n' /opt/L1/F5 /opt/L2/F5 /opt/L3/F5", backend)
    numbers = [line.split()[0] for line in check.stdout.splitlines()]
    if backend == "overlayfs":
        assert len(set(numbers)) < 3, check.stdout  # the case this test is about
    script = """set -e
for l in 1 2 3; do for i in $(seq 1 40); do
  [ "$(cat /opt/l$l/f$i)" = "L$l-$i" ] || { echo "wrong /opt/L$l/F$i"; exit 1; }
done; done
ls /OPT/L2 | wc -l
cat /opt/l3/HARD
echo new > /opt/L2/f7 && cat /opt/L2/F7 /opt/L1/F7 /opt/L3/f7
ln /opt/L2/F7 /opt/L3/other && echo linked >> /opt/l3/OTHER && cat /opt/l2/f7 /opt/L3/F9
"""
    if backend == "unionfs":
        # unionfs-fuse gives each name its own inode, so the page cache of one link does
        # not see a write through another (casefold or not): hard links are not its.
        script = script.replace("echo linked >> /opt/l3/OTHER && ", "")
    r = sh(runner, image, script, backend)
    assert r.returncode == 0, r.stdout + r.stderr
    linked = ["linked"] if backend != "unionfs" else []
    assert r.stdout.split() == ["41", "L3-1", "new", "L1-7", "L3-7", "new", *linked,
                                "L3-9"], r.stdout
    # Kept for the next run, and listings are the layers' own.
    r = sh(runner, image, "cat /opt/L3/OTHER; ls /opt", backend)
    assert r.stdout.split() == ["new", *linked, "L1", "L2", "L3", "base"], r.stdout


def test_no_daemon_outlives_the_run(image: Path, runner: Runner) -> None:
    fim(runner, image, "fim-casefold", "on")
    assert sh(runner, image, "true").returncode == 0
    data = image.parent / f".{image.name}.data" / "casefold"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as f:
                    assert str(data) not in f.read()
            except OSError:
                continue

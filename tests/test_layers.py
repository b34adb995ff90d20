"""fim-layer create/add/commit/list on real images: messages, stacking order,
deletions that survive commits under every backend, crash safety."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Runner
from test_overlays import BACKENDS, EXPECTED, MUTATE, READ, listing, run_in

from fim.runtime.image import chain, header


def data(image: Path) -> Path:
    return image.parent / f".{image.name}.data"


def fim(runner: Runner, image: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return runner.run([str(image), *args], env=env)


def chain_of(image: Path) -> chain.Chain:
    fd = os.open(image, os.O_RDONLY)
    try:
        return chain.scan(fd, header.read(str(image)))
    finally:
        os.close(fd)


def test_create_and_add(image: Path, runner: Runner, workdir: Path) -> None:
    src = workdir / "src"
    (src / "opt/extra/empty").mkdir(parents=True)
    (src / "opt/extra/file").write_text("content\n")
    (src / "opt/extra/link").symlink_to("file")
    os.link(src / "opt/extra/file", src / "opt/extra/hard")
    os.chmod(src / "opt/extra/file", 0o640)
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    out = workdir / "extra.layer"
    r = fim(runner, image, "fim-layer", "create", str(src), str(out))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "Gathering files to compress\nFilesystem created without errors\n"
    assert out.read_bytes()[:4] == b"hsqs"
    r = fim(runner, image, "fim-layer", "add", str(out))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"Included novel layer from file '{out}'\n"
    assert len(chain_of(image).elements) == 2
    r = fim(runner, image, "fim-exec", "sh", "-c",
            "cd /opt/extra; cat link; stat -c '%a %h' file; test -d empty && echo dir")
    assert r.stdout == "content\n640 2\ndir\n", r.stderr


@pytest.mark.parametrize("args,message", [
    ([], "Missing op for 'fim-layer' (create,add,commit,list)"),
    (["create", "a"], "create requires exactly two arguments (/path/to/dir /path/to/file.layer)"),
    (["list", "x"], "Trailing arguments for fim-layer list: ['x',]"),
    (["commit"], "Missing op for 'commit' (binary,layer,file)"),
])
def test_usage_errors(image: Path, runner: Runner, args: list, message: str) -> None:
    before = image.read_bytes()
    r = fim(runner, image, "fim-layer", *args)
    assert (r.returncode, r.stdout, r.stderr) == (125, "", f"E::{message}\n")
    assert image.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["create", "/nonexistent", "x.layer"], "Source directory '/nonexistent' does not exist"),
    (["create", "/etc/passwd", "x.layer"], "Source '/etc/passwd' is not a directory"),
])
def test_create_checks_the_source_after_saying_it_gathers(image: Path, runner: Runner,
                                                          args: list, message: str) -> None:
    """FlatImage's order: `Gathering files to compress`, then the source is looked at."""
    before = image.read_bytes()
    r = fim(runner, image, "fim-layer", *args)
    assert (r.returncode, r.stdout, r.stderr) == (
        125, "Gathering files to compress\n", f"E::{message}\n")
    assert image.read_bytes() == before


def test_add_refuses_what_is_not_a_layer(image: Path, runner: Runner, workdir: Path) -> None:
    junk = workdir / "junk.layer"
    junk.write_bytes(os.urandom(4096))
    before = image.read_bytes()
    r = fim(runner, image, "fim-layer", "add", str(junk))
    assert r.returncode == 125 and r.stderr.startswith("E::") and "not a layer" in r.stderr
    assert image.read_bytes() == before


def test_three_commits_each_shadow_the_previous(image: Path, runner: Runner) -> None:
    for text in ("first", "second", "third"):
        script = f"printf '#!/bin/sh\\necho {text}\\n' > /opt/hello-world.sh; " \
                 "chmod +x /opt/hello-world.sh"
        assert fim(runner, image, "fim-root", "sh", "-c", script).returncode == 0
        r = fim(runner, image, "fim-layer", "commit", "binary")
        assert r.returncode == 0, r.stderr
        assert r.stdout == ("Filesystem appended to binary without errors\n"
                            "Finished erasing files\n")
        assert list((data(image) / "data").iterdir()) == []
        assert fim(runner, image, "fim-exec", "/opt/hello-world.sh").stdout == f"{text}\n"
    assert len(chain_of(image).elements) == 4


@pytest.mark.parametrize("writer", BACKENDS)
def test_deletions_survive_commit_under_every_backend(image: Path, runner: Runner,
                                                      writer: str) -> None:
    # A file that lives in a committed layer, then deleted in a later one.
    assert run_in(runner, image, writer, "echo gone > /opt/base/added-early").returncode == 0
    assert fim(runner, image, "fim-layer", "commit", "binary").returncode == 0
    script = MUTATE + "; rm /opt/base/added-early"
    assert run_in(runner, image, writer, script).returncode == 0
    r = fim(runner, image, "fim-layer", "commit", "binary")
    assert r.returncode == 0, r.stderr
    for reader in BACKENDS:
        assert listing(run_in(runner, image, reader, READ)) == EXPECTED, reader
    # And after one more commit on top (the deletion layer is no longer the newest).
    assert run_in(runner, image, writer, "echo more > /opt/more").returncode == 0
    assert fim(runner, image, "fim-layer", "commit", "layer").returncode == 0
    for reader in BACKENDS:
        assert listing(run_in(runner, image, reader, READ)) == EXPECTED, reader


def test_create_and_add_of_the_upper_dir_keeps_deletions(image: Path, runner: Runner,
                                                         workdir: Path) -> None:
    assert run_in(runner, image, "unionfs", MUTATE).returncode == 0
    out = workdir / "changes.layer"
    r = fim(runner, image, "fim-layer", "create", str(data(image) / "data"), str(out))
    assert r.returncode == 0, r.stderr
    subprocess.run(["rm", "-rf", str(data(image))], check=True)
    assert fim(runner, image, "fim-layer", "add", str(out)).returncode == 0
    for reader in BACKENDS:
        assert listing(run_in(runner, image, reader, READ)) == EXPECTED, reader


def test_commit_layer_numbering(image: Path, runner: Runner) -> None:
    for i in range(30):
        assert fim(runner, image, "fim-root", "sh", "-c", f"echo {i} > /opt/n").returncode == 0
        r = fim(runner, image, "fim-layer", "commit", "layer")
        expected = data(image) / "layers" / f"layer-{i:03d}.layer"
        assert r.stdout.splitlines()[0] == f"Layer saved to '{expected}'", r.stderr
    names = sorted(p.name for p in (data(image) / "layers").iterdir())
    assert names == [f"layer-{i:03d}.layer" for i in range(30)]
    assert fim(runner, image, "fim-exec", "cat", "/opt/n").stdout == "29\n"


def test_commit_layer_refuses_past_999(image: Path, runner: Runner) -> None:
    layers = data(image) / "layers"
    layers.mkdir(parents=True)
    subprocess.run(["chown", "-R", str(runner.uid), str(data(image))], check=True)
    runner.run(["cp", str(image), str(layers / "layer-999.layer")])  # any file will do
    r = fim(runner, image, "fim-layer", "commit", "layer")
    assert (r.returncode, r.stderr) == (125, "E::Maximum number of layers exceeded\n")


def test_commit_file(image: Path, runner: Runner, workdir: Path) -> None:
    assert fim(runner, image, "fim-root", "sh", "-c", "echo saved > /opt/f").returncode == 0
    target = workdir / "out.layer"
    r = fim(runner, image, "fim-layer", "commit", "file", str(target))
    assert r.stdout.splitlines() == [f"Layer saved to '{target}'", "Finished erasing files"]
    assert fim(runner, image, "fim-exec", "cat", "/opt/f").returncode != 0
    r = runner.run([str(image), "fim-exec", "cat", "/opt/f"], env={"FIM_LAYERS": str(target)})
    assert r.stdout == "saved\n"
    r = fim(runner, image, "fim-layer", "commit", "file", str(target))
    assert (r.returncode, r.stderr) == (125, "E::Destination file already exists\n")


def test_mount_order_and_list(image: Path, runner: Runner, workdir: Path) -> None:
    def layer_with(name: str, text: str) -> Path:
        src = workdir / f"src-{name}"
        (src / "opt").mkdir(parents=True, exist_ok=True)
        (src / "opt/who").write_text(text)
        (src / f"opt/{name}").write_text(name)
        out = workdir / f"{name}.layer"
        assert fim(runner, image, "fim-layer", "create", str(src), str(out)).returncode == 0
        return out

    fim(runner, image, "fim-layer", "add", str(layer_with("embedded", "embedded")))
    managed = data(image) / "layers"
    managed.mkdir(parents=True, exist_ok=True)
    os.rename(layer_with("m1", "m1"), managed / "layer-001.layer")
    os.rename(layer_with("m0", "m0"), managed / "layer-000.layer")
    extdir = workdir / "extdir"
    extdir.mkdir()
    os.rename(layer_with("b", "b"), extdir / "b.layer")
    os.rename(layer_with("a", "a"), extdir / "a.layer")
    single = layer_with("single", "single")
    subprocess.run(["chown", "-R", str(runner.uid), str(workdir)], check=True)
    env = {"FIM_LAYERS": f"{extdir}:{single}"}
    r = runner.run([str(image), "fim-layer", "list"], env=env)
    rows = [line.split(":", 3) for line in r.stdout.splitlines()]
    elements = chain_of(image).elements
    expected_paths = [str(image), str(image), str(managed / "layer-000.layer"),
                      str(managed / "layer-001.layer"), str(extdir / "a.layer"),
                      str(extdir / "b.layer"), str(single)]
    assert [row[3] for row in rows] == expected_paths
    assert [int(row[0]) for row in rows] == list(range(7))
    assert [(int(r[1]), int(r[2])) for r in rows[:2]] == [(e.offset, e.size) for e in elements]
    for row in rows[2:]:
        assert (int(row[1]), int(row[2])) == (0, os.path.getsize(row[3]))
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo WHO=$(cat /opt/who); ls /opt"],
                   env={**env, "FIM_DEBUG": "1"})
    lines = r.stdout.splitlines()
    assert "WHO=single" in lines
    assert {"embedded", "m0", "m1", "a", "b", "single", "base"} <= set(lines)
    mounting = [ln for ln in r.stdout.splitlines() if ln.startswith("D::Mounting layer")]
    assert mounting == [f"D::Mounting layer from '{row[3]}' with offset '{row[1]}'"
                        for row in rows]


def test_torn_append_boots_with_a_warning_and_is_repaired(image: Path, runner: Runner,
                                                          workdir: Path) -> None:
    good = chain_of(image)
    with open(image, "ab") as f:
        f.write(struct.pack("<Q", 1 << 20) + b"hsqs" + os.urandom(4000))
    r = fim(runner, image, "fim-exec", "echo", "ok")
    assert r.returncode == 0 and r.stdout == "ok\n"
    assert r.stderr.startswith("W::Ignoring an incomplete last layer") and r.stderr.count("\n") == 1
    src = workdir / "src"
    (src / "opt").mkdir(parents=True)
    (src / "opt/new").write_text("new\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    out = workdir / "new.layer"
    assert fim(runner, image, "fim-layer", "create", str(src), str(out)).returncode == 0
    assert fim(runner, image, "fim-layer", "add", str(out)).returncode == 0
    repaired = chain_of(image)
    assert repaired.torn is None and len(repaired.elements) == len(good.elements) + 1
    r = fim(runner, image, "fim-exec", "cat", "/opt/new")
    assert (r.stdout, r.stderr) == ("new\n", "")


def test_compression_level_is_validated(image: Path, runner: Runner) -> None:
    fim(runner, image, "fim-root", "touch", "/opt/x")
    for bad in ("10", "-1", "high"):
        r = runner.run([str(image), "fim-layer", "commit", "binary"],
                       env={"FIM_COMPRESSION_LEVEL": bad})
        assert r.returncode == 125 and r.stderr.startswith("E::FIM_COMPRESSION_LEVEL")
    assert (data(image) / "data/opt/x").exists()
    for good in ("0", "9"):
        fim(runner, image, "fim-root", "touch", f"/opt/l{good}")
        r = runner.run([str(image), "fim-layer", "commit", "binary"],
                       env={"FIM_COMPRESSION_LEVEL": good})
        assert r.returncode == 0, r.stderr
    assert fim(runner, image, "fim-exec", "ls", "/opt/l0", "/opt/l9").returncode == 0


def test_kill_during_commit_loses_nothing(image: Path, runner: Runner) -> None:
    """SIGKILL at random instants of commits: the image always boots, and every file
    written is either still in the upper dir or in a committed layer."""
    rng = random.Random(1234)
    written = []
    for round_ in range(8):
        names = [f"/opt/k{round_}-{i}" for i in range(200)]
        script = ("for f in " + " ".join(names) + "; do echo $f > $f; done; "
                  f"dd if=/dev/urandom of=/opt/bulk-{round_} bs=1M count=4 2>/dev/null")
        assert fim(runner, image, "fim-root", "sh", "-c", script).returncode == 0
        written += names
        proc = runner.popen([str(image), "fim-layer", "commit", "binary"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        for pid in _tree(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        r = fim(runner, image, "fim-exec", "sh", "-c", "cat /opt/k*")
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.split()) == sorted(written)


def _tree(pid: int) -> list:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return found


def test_many_layers_run(image: Path, runner: Runner, workdir: Path) -> None:
    """The kernel overlay's options must fit one page: with many layers BWRAP cannot
    have it, and the run goes to UNIONFS (as after a refused SYS_mount) instead of
    failing with bubblewrap's mount error."""
    src = workdir / "one"
    (src / "opt").mkdir(parents=True)
    (src / "opt" / "many").write_text("many\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(src)], check=True)
    layer = workdir / "one.layer"
    r = runner.run([str(image), "fim-layer", "create", str(src), str(layer)])
    assert r.returncode == 0, r.stderr
    for _ in range(70):
        r = runner.run([str(image), "fim-layer", "add", str(layer)])
        assert r.returncode == 0, r.stderr
    r = runner.run([str(image), "fim-exec", "cat", "/opt/many", "/opt/base/keep"],
                   env={"FIM_KEEP": "0"})
    assert (r.returncode, r.stdout) == (0, "many\nkeep\n"), r.stderr
    assert "Can't make overlay mount" not in r.stderr

"""The keeper (FIM_KEEP): an image's mounts kept between launches, as root and as an
ordinary user, under every backend. Each test turns it on with a short idle time
and checks that nothing outlives it: no keeper, no daemon, no mount."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import Runner, keeper_processes, traces

BACKENDS = ["bwrap", "overlayfs", "unionfs"]
# Long enough for a test's next launch, short enough to see it go.
KEEP = "30"


def run(runner: Runner, image: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {"FIM_KEEP": KEEP, "FIM_DEBUG": "1"}
    full.update(env)
    return split_debug(runner.run([str(image), *args], env=full, timeout=60))


def split_debug(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """FIM_DEBUG's lines (on stdout) moved to the end of stderr."""
    lines = r.stdout.splitlines(keepends=True)
    debug = [line for line in lines if line[:3] in ("D::", "I::")]
    r.stdout = "".join(line for line in lines if line[:3] not in ("D::", "I::"))
    r.stderr = r.stderr + "".join(debug)
    return r


def keeper_of(r: subprocess.CompletedProcess) -> Optional[str]:
    """'started N' or 'reused N' from a launch's FIM_DEBUG lines; None without one."""
    m = re.search(r"D::Keeper: (started|reusing the mounts of) keeper (\d+)", r.stderr)
    if m is None:
        return None
    return ("started " if m.group(1) == "started" else "reused ") + m.group(2)


def pid_of(r: subprocess.CompletedProcess) -> str:
    found = keeper_of(r)
    assert found is not None, r.stderr
    return found.split()[1]


def listed_keepers(runner: Runner, image: Path) -> List[str]:
    r = runner.run([str(image), "fim-instance", "list"], env={"FIM_KEEP": KEEP})
    assert r.returncode == 0, r.stderr
    return [line.split(":", 1)[1] for line in r.stdout.split() if line.startswith("keeper:")]


def listed_instances(runner: Runner, image: Path) -> List[int]:
    r = runner.run([str(image), "fim-instance", "list"], env={"FIM_KEEP": KEEP})
    return [int(line.split(":", 1)[1]) for line in r.stdout.split()
            if line.split(":", 1)[0].isdigit()]


def wait_running(runner: Runner, image: Path) -> int:
    """The launcher of the image's one instance, once it runs under a keeper."""
    deadline = time.monotonic() + 20
    while not (listed_keepers(runner, image) and listed_instances(runner, image)):
        assert time.monotonic() < deadline, "the instance did not start"
        time.sleep(0.1)
    return listed_instances(runner, image)[0]


def wait_gone(image: Path, pids: List[str], seconds: float = 15) -> None:
    """Wait for the keepers `pids` (and every trace of the image) to be gone."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in pids if int(p) in keeper_processes()]
        left = traces(image)
        if not alive and not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {alive} {left}")
        time.sleep(0.2)


def wait_not_keeper(pid: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while int(pid) in keeper_processes():
        assert time.monotonic() < deadline, f"keeper {pid} still running"
        time.sleep(0.1)


@pytest.fixture
def kept(image: Path, runner: Runner) -> Iterator[Path]:
    """The runner's image; its keepers (and the moved copy's) are stopped after the test,
    no other: keepers of other images on the machine are not the test's."""
    yield image
    for path in (image, image.parent / "moved" / "moved.flatimage"):
        if path.exists():
            for pid in listed_keepers(runner, path):
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_relaunch_reuses_the_keeper(kept: Path, runner: Runner, backend: str) -> None:
    image = kept
    first = run(runner, image, "fim-exec", "sh", "-c", "cat /opt/base/keep; echo one > /opt/w",
                FIM_OVERLAY=backend)
    assert (first.returncode, first.stdout) == (0, "keep\n"), first.stderr
    assert (keeper_of(first) or "").startswith("started "), first.stderr
    pid = pid_of(first)
    for _ in range(2):
        again = run(runner, image, "fim-exec", "sh", "-c", "cat /opt/base/keep /opt/w",
                    FIM_OVERLAY=backend)
        assert (again.returncode, again.stdout) == (0, "keep\none\n"), again.stderr
        assert keeper_of(again) == f"reused {pid}", again.stderr
    # Listed, and holding nothing in the host's mount table (its namespaces are its own).
    listed = listed_keepers(runner, image)
    assert len(listed) == 1, listed
    data = str(image.parent / f".{image.name}.data")
    for table in ("/proc/self/mountinfo", "/proc/1/mountinfo"):
        with open(table) as f:
            assert data not in f.read()
    # What was written through the kept mounts is in the data dir, seen without it.
    r = runner.run([str(image), "fim-exec", "cat", "/opt/w"],
                   env={"FIM_KEEP": "0", "FIM_OVERLAY": backend})
    assert r.stdout == "one\n", r.stderr


def test_idle_exit(kept: Path, runner: Runner) -> None:
    image = kept
    r = run(runner, image, "fim-exec", "true", FIM_KEEP="1", FIM_OVERLAY="overlayfs")
    assert r.returncode == 0, r.stderr
    pids = listed_keepers(runner, image)
    assert len(pids) == 1
    wait_gone(image, pids, seconds=10)
    assert listed_keepers(runner, image) == []


def test_off_starts_no_keeper(kept: Path, runner: Runner) -> None:
    r = run(runner, kept, "fim-exec", "true", FIM_KEEP="0")
    assert r.returncode == 0 and keeper_of(r) is None, r.stderr
    assert listed_keepers(runner, kept) == []
    bad = run(runner, kept, "fim-exec", "true", FIM_KEEP="soon")
    assert bad.returncode == 125 and bad.stderr.startswith("E::FIM_KEEP"), bad.stderr


Change = Callable[[Runner, Path, Dict[str, str]], Tuple[Path, str]]


def _commit(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    r = run(runner, image, "fim-root", "sh", "-c", "echo new > /opt/new", **env)
    assert r.returncode == 0, r.stderr
    r = runner.run([str(image), "fim-layer", "commit", "binary"], env={"FIM_KEEP": KEEP})
    assert r.returncode == 0, r.stderr
    return image, "new\n"


def _add(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    layer = image.parent / "extra.layer"
    tree = image.parent / "extra"
    (tree / "opt").mkdir(parents=True)
    (tree / "opt" / "new").write_text("added\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(tree)], check=True)
    r = runner.run([str(image), "fim-layer", "create", str(tree), str(layer)])
    assert r.returncode == 0, r.stderr
    r = runner.run([str(image), "fim-layer", "add", str(layer)], env={"FIM_KEEP": KEEP})
    assert r.returncode == 0, r.stderr
    return image, "added\n"


def _layer_file(runner: Runner, image: Path) -> Path:
    tree = image.parent / "extra"
    (tree / "opt").mkdir(parents=True)
    (tree / "opt" / "new").write_text("from a layer file\n")
    subprocess.run(["chown", "-R", str(runner.uid), str(tree)], check=True)
    layer = image.parent / "extra.layer"
    r = runner.run([str(image), "fim-layer", "create", str(tree), str(layer)])
    assert r.returncode == 0, r.stderr
    return layer


def _layers_dir(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    layer = _layer_file(runner, image)
    managed = image.parent / f".{image.name}.data" / "layers"
    managed.mkdir(exist_ok=True)
    os.chown(managed, runner.uid, -1)
    os.rename(layer, managed / "layer-000.layer")
    return image, "from a layer file\n"


def _fim_layers(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    env["FIM_LAYERS"] = str(_layer_file(runner, image))
    return image, "from a layer file\n"


def _replaced(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    # Another image at the same path: the same one with a file more, committed elsewhere.
    other = image.parent / "other" / image.name
    other.parent.mkdir()
    subprocess.run(["cp", "-a", str(image), str(other)], check=True)
    subprocess.run(["chown", "-R", str(runner.uid), str(other.parent)], check=True)
    r = runner.run(["sh", "-c", f"{other} fim-root sh -c 'echo other > /opt/new' && "
                    f"{other} fim-layer commit binary"], env={"FIM_KEEP": "0"})
    assert r.returncode == 0, r.stderr
    os.rename(other, image)
    return image, "other\n"


def _moved(runner: Runner, image: Path, env: Dict[str, str]) -> Tuple[Path, str]:
    # The image and its data dir moved elsewhere, as a user moves an app.
    moved = image.parent / "moved" / "moved.flatimage"
    moved.parent.mkdir()
    os.chown(moved.parent, runner.uid, -1)
    os.rename(image, moved)
    os.rename(image.parent / f".{image.name}.data", moved.parent / f".{moved.name}.data")
    r = runner.run([str(moved), "fim-root", "sh", "-c", "echo moved > /opt/new"],
                   env={"FIM_KEEP": "0", **env})
    assert r.returncode == 0, r.stderr
    return moved, "moved\n"


def _data_dir_deleted(runner: Runner, image: Path,
                      env: Dict[str, str]) -> Tuple[Path, str]:
    data = image.parent / f".{image.name}.data"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    r = runner.run([str(image), "fim-root", "sh", "-c", "echo fresh > /opt/new"],
                   env={"FIM_KEEP": "0", **env})
    assert r.returncode == 0, r.stderr
    return image, "fresh\n"


CHANGES: Dict[str, Change] = {
    "commit": _commit,
    "add": _add,
    "layers-dir": _layers_dir,
    "FIM_LAYERS": _fim_layers,
    "image-replaced": _replaced,
    "image-moved": _moved,
    "data-dir-deleted": _data_dir_deleted,
}


@pytest.mark.parametrize("backend", ["bwrap", "overlayfs"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_gets_a_fresh_keeper(kept: Path, runner: Runner, backend: str,
                                      change: str) -> None:
    image = kept
    env = {"FIM_OVERLAY": backend}
    first = run(runner, image, "fim-exec", "cat", "/opt/base/keep", **env)
    assert first.returncode == 0, first.stderr
    old = pid_of(first)
    image, expected = CHANGES[change](runner, image, env)
    r = run(runner, image, "fim-exec", "cat", "/opt/new", **env)
    assert (r.returncode, r.stdout) == (0, expected), r.stderr
    assert keeper_of(r) == f"started {pid_of(r)}" and pid_of(r) != old, r.stderr
    # And that keeper serves the next launch.
    again = run(runner, image, "fim-exec", "cat", "/opt/new", **env)
    assert again.stdout == expected and keeper_of(again) == f"reused {pid_of(r)}", again.stderr


@pytest.mark.parametrize("switch", ["backend", "casefold"])
def test_backend_and_casefold_switch(kept: Path, runner: Runner, switch: str) -> None:
    image = kept
    first = run(runner, image, "fim-exec", "sh", "-c", "echo Kept > /opt/Case",
                FIM_OVERLAY="overlayfs")
    old = pid_of(first)
    if switch == "backend":
        r = run(runner, image, "fim-exec", "cat", "/opt/Case", FIM_OVERLAY="unionfs")
    else:
        assert runner.run([str(image), "fim-casefold", "on"]).returncode == 0
        r = run(runner, image, "fim-exec", "cat", "/opt/CASE", FIM_OVERLAY="overlayfs")
    assert (r.returncode, r.stdout) == (0, "Kept\n"), r.stderr
    assert keeper_of(r) == f"started {pid_of(r)}" and pid_of(r) != old, r.stderr
    # The stale one was idle: it is gone (the launch waited for its unmounts).
    wait_not_keeper(old, seconds=2)


def test_sigkill_of_the_keeper_leaves_nothing(kept: Path, runner: Runner) -> None:
    image = kept
    app = runner.popen([str(image), "fim-exec", "sleep", "30"],
                       env={**os.environ, "FIM_KEEP": KEEP, "FIM_OVERLAY": "overlayfs"})
    try:
        launcher = wait_running(runner, image)
        pids = listed_keepers(runner, image)
        assert len(pids) == 1
        os.kill(int(pids[0]), 9)
        os.kill(launcher, 9)
        app.wait(10)
    finally:
        app.kill()
    wait_gone(image, pids)
    # The next launch starts afresh.
    r = run(runner, image, "fim-exec", "cat", "/opt/base/keep", FIM_OVERLAY="overlayfs")
    assert (r.returncode, r.stdout) == (0, "keep\n") and "started" in (keeper_of(r) or ""), \
        r.stderr


def test_sigkill_of_an_instance_leaves_the_keeper_only(kept: Path, runner: Runner) -> None:
    image = kept
    env = {**os.environ, "FIM_KEEP": "2", "FIM_OVERLAY": "overlayfs"}
    app = runner.popen([str(image), "fim-exec", "sleep", "30"], env=env)
    try:
        os.kill(wait_running(runner, image), 9)
        app.wait(10)
    finally:
        app.kill()
    pids = listed_keepers(runner, image)
    assert len(pids) == 1
    # The keeper counts the killed instance out, waits its 2 seconds and ends.
    wait_gone(image, pids, seconds=15)


@pytest.mark.parametrize("backend", ["bwrap", "overlayfs"])
def test_commit_while_kept(kept: Path, runner: Runner, backend: str) -> None:
    image = kept
    r = run(runner, image, "fim-root", "sh", "-c", "echo a > /opt/a; rm /opt/base/del",
            FIM_OVERLAY=backend)
    assert r.returncode == 0, r.stderr
    pids = listed_keepers(runner, image)
    assert len(pids) == 1
    r = runner.run([str(image), "fim-layer", "commit", "binary"], env={"FIM_KEEP": KEEP})
    assert r.returncode == 0, r.stdout + r.stderr
    upper = image.parent / f".{image.name}.data" / "data"
    assert list(upper.iterdir()) == []
    wait_gone(image, pids, seconds=10)
    r = run(runner, image, "fim-exec", "sh", "-c", "cat /opt/a; ls /opt/base",
            FIM_OVERLAY=backend)
    assert r.stdout.split() == ["a", "keep", "over", "ren", "tree"], r.stderr


ROOT_MOUNT = "awk '$5 == \"/\" { sub(/.* - /, \"\"); print }' /proc/self/mountinfo"


def test_the_kernel_overlay_is_kept_for_its_instances(kept: Path, runner: Runner) -> None:
    """BWRAP: the keeper mounts the kernel overlay once and its instances share it (its
    caches too), where each unkept launch has bubblewrap mount one of its own."""
    image = kept
    roots = [run(runner, image, "fim-exec", "sh", "-c", ROOT_MOUNT, FIM_OVERLAY="bwrap")
             for _ in range(2)]
    assert [r.returncode for r in roots] == [0, 0], roots[0].stderr
    assert roots[0].stdout.startswith("overlay overlay "), roots[0].stdout
    assert roots[0].stdout == roots[1].stdout, (roots[0].stdout, roots[1].stdout)
    assert keeper_of(roots[1]) == f"reused {pid_of(roots[0])}", roots[1].stderr
    # One overlay for all: a file made by one instance is seen at once by another that
    # looked for it before (a second overlay of the same upper dir keeps its miss).
    env = {**os.environ, "FIM_KEEP": KEEP, "FIM_OVERLAY": "bwrap"}
    reader = runner.popen([str(image), "fim-exec", "sh", "-c",
                           "cat /opt/later 2>/dev/null; touch /tmp/looked; "
                           "while [ ! -e /opt/ready ]; do sleep 0.1; done; cat /opt/later"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL)
    try:
        wait_running(runner, image)
        time.sleep(0.5)
        w = run(runner, image, "fim-exec", "sh", "-c", "echo later > /opt/later; touch /opt/ready",
                FIM_OVERLAY="bwrap")
        assert w.returncode == 0, w.stderr
        out, err = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert (reader.returncode, out) == (0, "later\n"), err
    # Unkept, each launch has its own: bubblewrap's, with its own work dir.
    off = [runner.run([str(image), "fim-exec", "sh", "-c", ROOT_MOUNT],
                      env={"FIM_KEEP": "0", "FIM_OVERLAY": "bwrap"}) for _ in range(2)]
    assert off[0].stdout.startswith("overlay overlay ") and off[0].stdout != off[1].stdout, off


@pytest.mark.parametrize("backend", BACKENDS)
def test_instances_of_a_keeper_see_each_others_changes(kept: Path, runner: Runner,
                                                       backend: str) -> None:
    """What one instance changes through the kept root, another one running on it sees
    at once, though it read the same files before: no stale entry, data or miss."""
    image = kept
    setup = run(runner, image, "fim-exec", "sh", "-c",
                "echo a long first line > /opt/edit; echo gone > /opt/gone", FIM_OVERLAY=backend)
    assert setup.returncode == 0, setup.stderr
    env = {**os.environ, "FIM_KEEP": KEEP, "FIM_OVERLAY": backend}
    look = "cat /opt/edit /opt/gone /opt/base/keep; cat /opt/made 2>/dev/null; ls /opt"
    reader = runner.popen([str(image), "fim-exec", "sh", "-c",
                           f"{{ {look}; }} >/dev/null 2>&1; "
                           f"while [ ! -e /opt/ready ]; do sleep 0.1; done; {look}"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL)
    try:
        wait_running(runner, image)
        time.sleep(0.5)
        w = run(runner, image, "fim-exec", "sh", "-c",
                "echo short > /opt/edit; rm /opt/gone /opt/base/keep; echo made > /opt/made; "
                "touch /opt/ready", FIM_OVERLAY=backend)
        assert w.returncode == 0, w.stderr
        out, err = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert out.split() == ["short", "made", "base", "edit", "made", "ready"], (out, err)


def test_off_ends_an_idle_keeper(kept: Path, runner: Runner) -> None:
    """A launch with keeping off ends the idle keeper, whose claim on the upper dir would
    refuse it another backend's form."""
    image = kept
    first = run(runner, image, "fim-exec", "sh", "-c", "echo b > /opt/b", FIM_OVERLAY="bwrap")
    assert first.returncode == 0, first.stderr
    r = runner.run([str(image), "fim-exec", "cat", "/opt/b"],
                   env={"FIM_KEEP": "0", "FIM_OVERLAY": "unionfs"})
    assert (r.returncode, r.stdout) == (0, "b\n"), r.stderr
    wait_not_keeper(pid_of(first), seconds=2)


def test_concurrent_first_launches_start_one_keeper(kept: Path, runner: Runner) -> None:
    image = kept
    env = {**os.environ, "FIM_KEEP": KEEP, "FIM_DEBUG": "1", "FIM_OVERLAY": "overlayfs"}
    apps = [runner.popen([str(image), "fim-exec", "sh", "-c", "sleep 1; cat /opt/base/keep"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
            for _ in range(4)]
    outs = [app.communicate(timeout=60) for app in apps]
    outs = [(split_debug(subprocess.CompletedProcess([], 0, out, err)).stdout,
             out + err) for out, err in outs]
    assert [app.returncode for app in apps] == [0] * 4, outs
    assert [out for out, _ in outs] == ["keep\n"] * 4
    seen = [re.search(r"D::Keeper: (\w+).* keeper (\d+)", err) for _, err in outs]
    assert all(seen), outs
    assert sorted(m.group(1) for m in seen if m) == ["reusing", "reusing", "reusing",
                                                     "started"]
    assert len({m.group(2) for m in seen if m}) == 1
    assert len(listed_keepers(runner, image)) == 1

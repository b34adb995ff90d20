"""The unwind stack, the process helper and the paths value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fim.runtime import paths, process
from fim.runtime.unwind import Stack


def test_stack_unwinds_in_reverse_and_runs_every_call() -> None:
    done: list = []

    def fail(name: str) -> None:
        done.append(name)
        raise OSError(5, name)

    stack = Stack()
    stack.push(done.append, "first")
    stack.push(fail, "middle")
    stack.push(done.append, "last")
    with pytest.raises(OSError, match="middle"):
        stack.close()
    assert done == ["last", "middle", "first"]
    assert len(stack) == 0


def test_an_error_on_its_way_out_wins() -> None:
    def fail() -> None:
        raise OSError(5, "unwinding")

    with pytest.raises(ValueError, match="first"), Stack() as stack:
        stack.push(fail)
        raise ValueError("first")


def test_exit_codes() -> None:
    env = dict(os.environ)
    assert process.run(["/bin/sh", "-c", "exit 7"], env) == 7
    assert process.run(["/bin/sh", "-c", "kill -TERM $$"], env) == 128 + 15
    assert process.wait(process.fork(lambda: 3)) == 3


def test_spawn_logs_and_reports_a_missing_program(tmp_path: object) -> None:
    from fim.runtime.errors import FimError

    log = os.path.join(str(tmp_path), "t.log")
    assert process.run(["/bin/sh", "-c", "echo out; echo err >&2"], dict(os.environ), log) == 0
    with open(log) as f:
        assert f.read() == "out\nerr\n"
    with pytest.raises(FimError, match="Cannot start '/nonexistent'"):
        process.spawn(["/nonexistent"], {})


def test_read_all_reads_until_the_writer_closes() -> None:
    r, w = os.pipe()

    def child() -> int:
        os.close(r)
        for _ in range(20):
            os.write(w, b"x" * 10000)
        return 0

    pid = process.fork(child)
    os.close(w)
    assert process.read_all(r) == b"x" * 200000
    assert process.wait(pid) == 0


def test_paths_are_derived_from_one_value() -> None:
    p = paths.of("/opt/games/app.flatimage", "/tmp/fim", "abc", 42,
                 {"FIM_DIR_DATA": "/opt/games/.app.flatimage.data"})
    assert p.dir_data == "/opt/games/.app.flatimage.data"
    assert p.dir_upper == "/opt/games/.app.flatimage.data/data"
    assert p.dir_work == "/opt/games/.app.flatimage.data/work/42"
    assert p.state_file == "/opt/games/.app.flatimage.data/overlay.state"
    assert p.dir_runtime == "/tmp/fim/app/abc/runtime"
    assert p.dir_instance == "/tmp/fim/app/abc/instance/42"
    assert p.layer_mountpoint(3) == "/tmp/fim/app/abc/instance/42/layers/3"
    assert p.log("squashfuse") == "/tmp/fim/app/abc/instance/42/logs/squashfuse.log"
    assert p.fim_vars()["FIM_DIR_LAYERS"] == "/opt/games/.app.flatimage.data/layers"


def test_process_title_shows_in_ps() -> None:
    import subprocess
    import sys

    src = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from fim.runtime import process; "
            "process.set_title(['/opt/app.flatimage', 'fim-exec', 'sleep', '30']); "
            "print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, src, "x" * 200],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with open(f"/proc/{child.pid}/cmdline", "rb") as f:
            assert f.read() == b"/opt/app.flatimage fim-exec sleep 30\0"
        with open(f"/proc/{child.pid}/comm") as f:
            assert f.read().strip() == "app.flatimage"
    finally:
        child.kill()
        child.wait()


def test_half_written_files_of_dead_writers_are_swept(tmp_path: os.PathLike[str]) -> None:
    """runtime.PID (an extraction) and .NAME.PID[-TOKEN].partial (files.beside) of a
    writer that is gone are removed; a live writer's, and other files, stay."""
    from fim.runtime import files, instance

    dead = process.spawn(["/bin/true"], {}, os.devnull)
    process.wait(dead)
    live = os.getppid()
    names = [f"runtime.{dead}", f".commit.{dead}.partial", f".a.b.{dead}-12345678.partial",
             f"runtime.{live}", f".commit.{live}.partial", "runtime", "x.markers",
             ".odd.partial"]
    for name in names:
        if name.startswith("runtime"):
            os.makedirs(os.path.join(tmp_path, name, "sub"))
        else:
            open(os.path.join(tmp_path, name), "w").close()
    mine = files.beside(os.path.join(tmp_path, "mine"))
    open(mine, "w").close()
    instance.sweep_partials(os.fspath(tmp_path))
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(names[3:] + [os.path.basename(mine)])


def test_the_data_directory_next_to_the_image_or_elsewhere(tmp_path: Path) -> None:
    image = str(tmp_path / "app.flatimage")
    assert paths.data_dir(image, {}) == (str(tmp_path / ".app.flatimage.data"), "")
    assert paths.data_dir(image, {"FIM_DIR_DATA": "rel/d"}) == (os.path.abspath("rel/d"),
                                                                 "FIM_DIR_DATA")
    # Where nothing can be written (a directory that does not exist stands for it here):
    # the user's own, one per image path.
    far = "/nonexistent-dir/app.flatimage"
    data, why = paths.data_dir(far, {"XDG_DATA_HOME": "/x/share", "HOME": "/h"})
    assert data.startswith("/x/share/fim/app.flatimage-") and len(data.rsplit("-", 1)[1]) == 12
    assert why == "'/nonexistent-dir/.app.flatimage.data' is not writable"
    other, _ = paths.data_dir("/nonexistent-dir2/app.flatimage", {"HOME": "/h"})
    assert other.startswith("/h/.local/share/fim/app.flatimage-") and other != data

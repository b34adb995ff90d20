"""The three overlay backends on one upper directory: mutations, persistence, the 3x3
matrix, selection, fallbacks and missing tools. Root and rootless."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Runner

from fim.runtime.image import header
from fim.runtime.image.reserved import REGIONS, write_region

BACKENDS = ["bwrap", "overlayfs", "unionfs"]

MUTATE = (
    "set -e; cd /opt/base;"
    " echo new > over; rm del; mv ren renamed; echo added > added;"
    " rm -rf tree; mkdir -p tree; echo fresh > tree/z"
)
# Lists the base tree with contents, then every piece of backend bookkeeping
# that would be visible: none may appear.
READ = (
    "cd /opt/base && for f in $(find . | sort); do"
    " if [ -f $f ]; then echo \"$f=$(cat $f)\"; else echo \"$f\"; fi; done;"
    " find / -xdev \\( -name '.wh.*' -o -name '*_HIDDEN~' -o -name .unionfs-fuse"
    " -o -type c \\) -print 2>/dev/null | sed 's/^/LEAK /'"
)
EXPECTED = [".", "./added=added", "./keep=keep", "./over=new", "./renamed=ren", "./tree",
            "./tree/z=fresh"]
UNCHANGED = [".", "./del=del", "./keep=keep", "./over=over", "./ren=ren", "./tree",
             "./tree/deep", "./tree/deep/y=y", "./tree/x=x"]


def run_in(runner: Runner, image: Path, backend: str, script: str, root: bool = True,
           **env: str) -> subprocess.CompletedProcess:
    cmd = "fim-root" if root else "fim-exec"
    return runner.run([str(image), cmd, "sh", "-c", script], env={"FIM_OVERLAY": backend, **env})


def listing(r: subprocess.CompletedProcess) -> list:
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout.split()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mutations_in_the_same_run_and_the_next(image: Path, runner: Runner,
                                                 backend: str) -> None:
    assert listing(run_in(runner, image, backend, READ)) == UNCHANGED
    assert listing(run_in(runner, image, backend, MUTATE + "; " + READ)) == EXPECTED
    assert listing(run_in(runner, image, backend, READ, root=False)) == EXPECTED


def test_fuse_overlayfs_reports_uncounted_directory_links(image: Path, runner: Runner) -> None:
    # fuse-overlayfs runs with static_nlink (a counted link count cost a cold start
    # round trips through every layer); the kernel overlay still counts, and find
    # walks both trees alike (READ above).
    script = "stat -c %h /opt/base/tree /opt/base/tree/x"
    kernel = run_in(runner, image, "bwrap", script)
    fuse = run_in(runner, image, "overlayfs", script)
    assert kernel.returncode == 0 and fuse.returncode == 0, (kernel.stderr, fuse.stderr)
    assert kernel.stdout.split() == ["3", "1"]
    assert fuse.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("writer", BACKENDS)
@pytest.mark.parametrize("reader", BACKENDS)
def test_matrix_mutate_under_one_read_under_another(image: Path, runner: Runner, writer: str,
                                                    reader: str) -> None:
    assert run_in(runner, image, writer, MUTATE).returncode == 0
    assert listing(run_in(runner, image, reader, READ)) == EXPECTED
    # And back: the writer still reads what it wrote after the reader's turn.
    assert listing(run_in(runner, image, writer, READ)) == EXPECTED


def test_changes_accumulate_across_backend_switches(image: Path, runner: Runner) -> None:
    steps = [
        ("unionfs", "rm /opt/base/keep"),
        ("bwrap", "rm -rf /opt/base/tree; mkdir /opt/base/tree; echo 1 > /opt/base/tree/one"),
        ("overlayfs", "echo back > /opt/base/keep; rm /opt/base/del"),
        ("unionfs", "rm -rf /opt/base/tree; mkdir /opt/base/tree; echo 2 > /opt/base/tree/two"),
        ("bwrap", "mv /opt/base/over /opt/base/tree/over"),
    ]
    for backend, script in steps:
        assert run_in(runner, image, backend, script).returncode == 0, backend
    expected = [".", "./keep=back", "./ren=ren", "./tree", "./tree/over=over", "./tree/two=2"]
    for backend in BACKENDS:
        assert listing(run_in(runner, image, backend, READ)) == expected, backend


@pytest.mark.parametrize("stored,env,expected", [
    (None, None, "BWRAP"),
    ("overlayfs", None, "FUSE_OVERLAYFS"),
    ("unionfs", None, "UNIONFS_FUSE"),
    ("unionfs", "bwrap", "BWRAP"),
    ("bwrap", "overlayfs", "FUSE_OVERLAYFS"),
    ("overlayfs", "", "FUSE_OVERLAYFS"),
    ("overlayfs", "nonsense", "FUSE_OVERLAYFS"),
])
def test_selection_priority(image: Path, runner: Runner, stored: str, env: str,
                            expected: str) -> None:
    if stored:
        assert runner.run([str(image), "fim-overlay", "set", stored]).returncode == 0
    extra = {"FIM_DEBUG": "1"}
    if env is not None:
        extra["FIM_OVERLAY"] = env
    r = runner.run([str(image), "fim-exec", "true"], env=extra)
    assert r.returncode == 0, r.stderr
    assert f"D::Overlay type: {expected}" in r.stdout.splitlines()


def _casefold_on(image: Path) -> None:
    write_region(str(image), header.read(str(image)), REGIONS["casefold"], b"\x01")


def test_casefold_turns_bwrap_into_unionfs(image: Path, runner: Runner) -> None:
    _casefold_on(image)
    r = runner.run([str(image), "fim-exec", "echo", "ok"], env={"FIM_DEBUG": "1"})
    assert r.returncode == 0
    assert "D::Overlay type: UNIONFS_FUSE" in r.stdout.splitlines()
    assert r.stderr == "W::casefold cannot be used with bwrap overlayfs, falling back to unionfs\n"
    quiet = runner.run([str(image), "fim-exec", "echo", "ok"])
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "ok\n", "")
    # The FUSE backends are kept as chosen.
    r = runner.run([str(image), "fim-exec", "true"],
                   env={"FIM_DEBUG": "1", "FIM_OVERLAY": "overlayfs"})
    assert "D::Overlay type: FUSE_OVERLAYFS" in r.stdout.splitlines() and r.stderr == ""


def test_refused_kernel_overlay_retries_with_unionfs(image: Path, runner: Runner,
                                                     workdir: Path) -> None:
    """An upper directory on a FUSE filesystem: the kernel refuses the overlay mount."""
    backing, fusedir = workdir / "backing", workdir / "fuse"
    backing.mkdir()
    fusedir.mkdir()
    for d in (backing, fusedir):
        os.chown(d, runner.uid, -1)
    mount = runner.run(["unionfs", "-o", "cow", f"{backing}=RW", str(fusedir)])
    assert mount.returncode == 0, mount.stderr
    try:
        moved = fusedir / "app.flatimage"
        runner.run(["cp", str(image), str(moved)])
        r = runner.run([str(moved), "fim-exec", "sh", "-c", "echo run >> /var/tmp/count; id -u"],
                       env={"FIM_DEBUG": "1"})
        assert r.returncode == 0, r.stderr
        assert "ERROR: Bwrap failed SYS_mount, retrying with unionfs-fuse...\n" in r.stderr
        lines = r.stdout.splitlines()
        assert lines.index("D::Overlay type: BWRAP") < lines.index("D::Overlay type: UNIONFS_FUSE")
        assert lines[-1] == str(runner.uid)
        # The program ran exactly once.
        count = backing / ".app.flatimage.data/data/var/tmp/count"
        assert count.read_text() == "run\n"
    finally:
        runner.run(["fusermount3", "-u", str(fusedir)])


@pytest.mark.parametrize("backend,tool", [("overlayfs", "fuse-overlayfs"), ("unionfs", "unionfs")])
def test_missing_tool_is_one_clear_line(host_tools_image: Path, runner: Runner, workdir: Path,
                                        backend: str, tool: str) -> None:
    image = workdir / "app.flatimage"
    shutil.copy2(host_tools_image, image)
    os.chown(image, runner.uid, -1)
    # A PATH that has every tool but the backend's (sbin dirs hold none of them).
    bindir = workdir / "bin"
    bindir.mkdir()
    for name in ("squashfuse_ll", "squashfuse", "fusermount3", "mksquashfs", "fuse-overlayfs",
                 "unionfs"):
        if name != tool and shutil.which(name):
            (bindir / name).symlink_to(shutil.which(name))  # type: ignore[arg-type]
    r = runner.run([str(image), "fim-exec", "true"],
                   env={"FIM_OVERLAY": backend, "PATH": str(bindir)})
    assert r.returncode == 125 and r.stdout == ""
    assert r.stderr.startswith(f"E::'{tool}' is required for the ") and r.stderr.count("\n") == 1
    assert "install" in r.stderr and "FIM_OVERLAY=" in r.stderr
    data = image.parent / f".{image.name}.data"
    assert not (data / "work").exists() or list((data / "work").iterdir()) == []


def test_switch_refused_while_another_backend_runs(image: Path, runner: Runner) -> None:
    first = runner.popen([str(image), "fim-exec", "sleep", "3"],
                         env={**os.environ, "FIM_OVERLAY": "bwrap"})
    try:
        time.sleep(1)
        r = run_in(runner, image, "unionfs", "true")
        assert r.returncode == 125 and r.stderr.startswith("E::") and "in use" in r.stderr
        same = run_in(runner, image, "bwrap", "echo ok")
        assert same.stdout == "ok\n"
    finally:
        first.wait(timeout=30)
    assert run_in(runner, image, "unionfs", "echo ok").stdout == "ok\n"


def test_data_dir_made_as_root_keeps_its_meaning_for_a_user(
        image: Path, runner: Runner, unprivileged: Runner) -> None:
    """fuse-overlayfs as root marks opaque directories with trusted.* xattrs, which a
    user's overlay cannot read: the conversion gives them the one meaning."""
    if runner.user is not None or os.getuid() != 0 or unprivileged.user is None:
        pytest.skip("needs root and the unprivileged test user")
    assert run_in(runner, image, "overlayfs", MUTATE).returncode == 0
    subprocess.run(["chown", "-R", str(unprivileged.uid), str(image.parent)], check=True)
    for reader in BACKENDS:
        assert listing(run_in(unprivileged, image, reader, READ)) == EXPECTED, reader

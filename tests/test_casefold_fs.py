"""casefold, the case-insensitive FUSE view of a directory, on real mounts: the checks
of casefold_checks.py run inside a namespace as each identity, one test per check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from casefold_checks import CHECKS, SRC, SYSTEM_PYTHON
from conftest import RUNUSER, Runner

# -- the tests ------------------------------------------------------------------


def _namespace_argv(user: Optional[str], script: List[str]) -> List[str]:
    if user is None:
        return ["unshare", "-m", "--propagation", "private"] + script
    return [RUNUSER, "-u", user, "--", "unshare", "-r", "-m"] + script


@pytest.fixture(scope="module", params=["root", "user"])
def report(request: pytest.FixtureRequest, unprivileged: Optional[Runner]) -> Iterator[
        Dict[str, str]]:
    """The checks' outcome for one identity, run once per module."""
    if shutil.which("unshare") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("needs unshare and /dev/fuse")
    user: Optional[str] = None
    if request.param == "root":
        if os.getuid() != 0:
            pytest.skip("needs root")
    else:
        if unprivileged is None:
            pytest.skip("cannot create an unprivileged user")
        user = unprivileged.user
    base = Path(tempfile.mkdtemp(prefix="fim-casefold-"))
    try:
        os.chmod(base, 0o755)
        (base / "source").mkdir()
        (base / "mnt").mkdir()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            for path in (base / "source", base / "mnt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # A copy of the checks and the runtime where every identity can read them.
        code = base / "code"
        shutil.copytree(SRC / "fim", code / "src" / "fim",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (code / "tests").mkdir()
        shutil.copy2(Path(__file__).resolve().parent / "casefold_checks.py", code / "tests")
        subprocess.run(["chmod", "-R", "a+rX", str(code)], check=True)
        script = [SYSTEM_PYTHON, str(code / "tests" / "casefold_checks.py"), "inside",
                  str(base / "source"), str(base / "mnt")]
        r = subprocess.run(_namespace_argv(user, script), capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout + r.stderr
        yield json.loads(r.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


OUTCOMES = ["mount", *CHECKS, "unmount", "mount_failure", "usage"]


@pytest.mark.parametrize("name", OUTCOMES)
def test_casefold_mount(report: Dict[str, str], name: str) -> None:
    assert report.get(name) == "ok", report.get(name, "not run")


def test_wire_structures_have_the_kernels_sizes() -> None:
    from fim.runtime.casefold import protocol as P

    # include/uapi/linux/fuse.h
    sizes = {
        "IN_HEADER": 40, "OUT_HEADER": 16, "ATTR": 88, "ENTRY_OUT": 128, "ATTR_OUT": 104,
        "INIT_IN": 16, "INIT_OUT": 64, "GETATTR_IN": 16, "SETATTR_IN": 88, "MKNOD_IN": 16,
        "MKDIR_IN": 8, "RENAME2_IN": 16, "OPEN_IN": 8, "CREATE_IN": 16, "OPEN_OUT": 16,
        "READ_IN": 40, "WRITE_IN": 40, "WRITE_OUT": 8, "RELEASE_IN": 24, "FLUSH_IN": 24,
        "FSYNC_IN": 16, "STATFS_OUT": 80, "SETXATTR_IN": 8, "GETXATTR_IN": 8,
        "FALLOCATE_IN": 32, "LSEEK_IN": 24, "LSEEK_OUT": 8, "DIRENT": 24,
        "FORGET_ONE": 16, "BATCH_FORGET_IN": 8, "NOTIFY_INVAL_INODE_OUT": 24,
        "BACKING_MAP": 16,
    }
    assert {name: getattr(P, name).size for name in sizes} == sizes
    assert len(P.dirent(1, 1, b"abc", 8)) == 32 and len(P.dirent(1, 1, b"x" * 8, 8)) == 32
    for dev in (os.makedev(8, 1), os.makedev(259, 70000), os.makedev(4095, 1048575)):
        assert P.decode_dev(P.encode_dev(dev)) == dev

"""Shared fixtures: a real busybox image built once per session, fresh copies per
test, and an unprivileged user for the rootless cases (created when run as root)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set

import pytest

TEST_USER = "fimtest"
# Each test checks what one run mounts and leaves; a keeper holding an image's mounts
# for the next launch would outlive it. tests/test_keeper.py turns it on.
os.environ["FIM_KEEP"] = "0"
# Resolved once: tests may run commands with a PATH that lacks it.
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass(frozen=True)
class Runner:
    """Runs commands as one identity: the current user, or the unprivileged test user."""

    name: str
    user: Optional[str]  # None: the current process's identity
    uid: int

    def argv(self, argv: Sequence[str]) -> List[str]:
        if self.user is None:
            return list(argv)
        # -p keeps the environment the test sets (HOME included).
        return [RUNUSER, "-p", "-u", self.user, "--"] + list(argv)

    def run(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
            timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.pop("FIM_OVERLAY", None)
        full_env.pop("FIM_DEBUG", None)
        if self.user is not None:
            full_env.update(HOME=f"/home/{self.user}", USER=self.user, LOGNAME=self.user)
        full_env.update(env or {})
        if "input" not in kw:
            # CI may run with stdin closed; give programs an empty one instead.
            kw["stdin"] = subprocess.DEVNULL
        return subprocess.run(self.argv(argv), env=full_env, capture_output=True, text=True,
                              timeout=timeout, **kw)  # type: ignore[call-overload]

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen:
        if self.user is not None:
            env = dict(kw.pop("env", os.environ))  # type: ignore[call-overload]
            env.update(HOME=f"/home/{self.user}", USER=self.user, LOGNAME=self.user)
            kw["env"] = env
        return subprocess.Popen(self.argv(argv), **kw)  # type: ignore[call-overload]


# The suite's images are built at a low compression level: a Debian root takes about
# 50 s at the default (zstd 19) on two cores and 5 s at level 1, and what the tests
# check does not depend on the level (tests/test_format.py and test_layers.py check
# the levels themselves).
BUILD_ENV = {"FIM_COMPRESSION_LEVEL": "1"}


def fim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fim", *args], capture_output=True, text=True,
                          env={**BUILD_ENV, **os.environ})


# Debian root filesystems the slow tests build once and keep for later runs.
CACHE = Path("/var/tmp/fim-test-cache")


def cached_rootfs(name: str, include: str) -> Path:
    """A Debian bookworm minbase with the packages `include` (comma-separated)."""
    if os.getuid() != 0:
        pytest.skip("making a Debian root filesystem needs root")
    import hashlib

    from fim.builder import rootfs

    # A tree made before the builder's adjustments changed is made again.
    made_by = hashlib.sha256((rootfs.APT_SANDBOX + rootfs.APT_SMALL).encode()).hexdigest()[:8]
    name = f"{name}-{made_by}"
    root = CACHE / name
    stamp = CACHE / f"{name}.done"
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        r = fim("rootfs", "debian", str(root), "--include", include)
        assert r.returncode == 0, r.stderr
        stamp.touch()
    return root


# Files in layer 0 that tests change, delete, rename and replace.
BASE_TREE = {
    "opt/base/keep": "keep\n",
    "opt/base/del": "del\n",
    "opt/base/over": "over\n",
    "opt/base/ren": "ren\n",
    "opt/base/tree/x": "x\n",
    "opt/base/tree/deep/y": "y\n",
}


def add_base_tree(rootfs: Path) -> None:
    for rel, text in BASE_TREE.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def keeper_processes(build_ids: Optional[Set[str]] = None) -> List[int]:
    """Every keeper running on this machine (its process title ends in fim-keeper), or
    only those of images with these build ids (their log is in the build's directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0]
            if not title.endswith(b" fim-keeper"):
                continue
            log = os.readlink(f"/proc/{entry}/fd/1") if build_ids is not None else ""
        except OSError:
            continue
        if build_ids is None or any(f"/app/{b}/" in log for b in build_ids):
            found.append(int(entry))
    return found


def traces(image: Path) -> List[str]:
    """Processes whose command line names the image (its daemons do) and mounts of any
    process that name its data dir: what an ended keeper must not leave."""
    data = str(image.parent / f".{image.name}.data")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/mountinfo") as f:
                mounts = f.read()
        except OSError:
            continue
        if (str(image) in cmdline or data in cmdline) and "pytest" not in cmdline:
            found.append(f"process {entry}: {cmdline}")
        elif "pytest" not in cmdline and _holds(entry, (str(image), data)):
            # Our processes show the image's name only: one that still holds the image
            # or its data dir open (a lock) is left behind too.
            found.append(f"process {entry} holding the image or its data: {cmdline}")
        if data in mounts:
            found.append(f"mounts of process {entry}")
    return found


def _holds(pid: str, prefixes: Sequence[str]) -> bool:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith(prefix) for link in links for prefix in prefixes)


def _build_ids(base: Path) -> Set[str]:
    """The build ids of the images under `base` (header at 8192, id at 72)."""
    ids = set()
    for image in base.rglob("*.flatimage"):
        try:
            with open(image, "rb") as f:
                f.seek(8192 + 72)
                ids.add(f.read(32).rstrip(b"\0").decode("ascii", "replace"))
        except OSError:
            continue
    return ids


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def reap(root: Path) -> List[str]:
    """Kill every process whose command line names a path under `root` and lazily
    unmount every mount of ours under it: what a failed test could leave (a FUSE
    daemon and its mount). What was found, for the report."""
    prefix = str(root)
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest" not in cmdline and (prefix in cmdline or _holds(entry, (prefix + "/",))):
            found.append(f"process {entry}: {cmdline[:200]}")
            try:
                os.kill(int(entry), 9)
            except OSError:
                pass
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")),
                        reverse=True):
        found.append(f"mount {point}")
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_keeper_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A failed test must not leave keepers, daemons or mounts behind; only this
    session's: another session's (or a user's) on the machine are not ours."""
    yield
    for pid in keeper_processes(_build_ids(tmp_path_factory.getbasetemp())):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    reap(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def debian_root() -> Path:
    """Debian bookworm minbase with python3 and fuse3."""
    return cached_rootfs("debian-bookworm-python3-fuse3", "python3,fuse3")


@pytest.fixture(scope="session")
def debian_image(debian_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("debian") / "debian.flatimage"
    r = fim("build", str(debian_root), str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("image")
    r = fim("rootfs", "busybox", str(base / "rootfs"))
    assert r.returncode == 0, r.stderr
    add_base_tree(base / "rootfs")
    r = fim("build", str(base / "rootfs"), str(base / "app.flatimage"))
    assert r.returncode == 0, r.stderr
    return base / "app.flatimage"


@pytest.fixture(scope="session")
def host_tools_image(built_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same root filesystem, carrying only bubblewrap: other tools come from the host."""
    base = tmp_path_factory.mktemp("host-tools")
    r = fim("build", "--embed", "bwrap", str(built_image.parent / "rootfs"),
            str(base / "app.flatimage"))
    assert r.returncode == 0, r.stderr
    return base / "app.flatimage"


def _ensure_user() -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        return None
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", TEST_USER], check=True)
    return pwd.getpwnam(TEST_USER)


def ensure_subordinate_ids() -> bool:
    """Give the test user subordinate ids (as rootless podman needs) if it has none."""
    from fim.runtime import idmap

    entry = pwd.getpwnam(TEST_USER)
    if all(idmap.ranges(f, TEST_USER, entry.pw_uid) for f in ("/etc/subuid", "/etc/subgid")):
        return True
    if os.getuid() != 0 or shutil.which("usermod") is None:
        return False
    r = subprocess.run(["usermod", "--add-subuids", "300000-365535", "--add-subgids",
                        "300000-365535", TEST_USER], capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="session")
def unprivileged() -> Optional[Runner]:
    """The rootless identity: the test user when we are root, else ourselves."""
    if os.getuid() != 0:
        return Runner("user", None, os.getuid())
    entry = _ensure_user()
    if entry is None:
        return None
    if os.path.exists("/dev/fuse"):
        # As distributions ship it; some minimal systems make it root-only.
        os.chmod("/dev/fuse", 0o666)
    return Runner("user", TEST_USER, entry.pw_uid)


@pytest.fixture(params=["root", "user"])
def runner(request: pytest.FixtureRequest, unprivileged: Optional[Runner]) -> Runner:
    """Each test using this runs once as root and once as an ordinary user."""
    if request.param == "root":
        if os.getuid() != 0:
            pytest.skip("needs root")
        return Runner("root", None, 0)
    if unprivileged is None:
        pytest.skip("cannot create an unprivileged user")
    return unprivileged


@pytest.fixture
def workdir(runner: Runner) -> Iterator[Path]:
    """A directory the runner owns, outside root-only pytest temp dirs."""
    path = Path(tempfile.mkdtemp(prefix="fim-test-"))
    os.chmod(path, 0o755)
    if runner.user is not None:
        os.chown(path, runner.uid, -1)
    yield path
    reap(path)  # a failed test's daemons and mounts, before the tree goes
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def image(built_image: Path, workdir: Path, runner: Runner) -> Path:
    """A fresh copy of the session's image, owned by the runner."""
    dest = workdir / "app.flatimage"
    shutil.copy2(built_image, dest)
    if runner.user is not None:
        os.chown(dest, runner.uid, -1)
    return dest

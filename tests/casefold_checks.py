"""The checks of tests/test_casefold_fs.py, run as a script inside a namespace.

No pytest here: the script runs with the system's Python from a copy the test user
can reach (the checkout may be in a directory only root can enter).

casefold, the case-insensitive FUSE view of a directory, on real mounts.

Each identity (root in a private mount namespace; the unprivileged test user as uid 0
of a user + mount namespace) runs this file as a script inside its namespaces: it
mounts a temporary SOURCE with the server, runs every check below against the mount,
unmounts and reports one JSON object {check: "ok" | what failed}. The tests assert on
that report, one test per check and identity.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

SRC = Path(__file__).resolve().parent.parent / "src"
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
SERVER = [SYSTEM_PYTHON, "-I", "-S", "-c",
          f"import sys; sys.path.insert(0, {str(SRC)!r}); import runpy; "
          "runpy.run_module('fim.runtime.casefold', run_name='__main__')"]
GIB = 1 << 30

Check = Callable[[Path, Path], None]
CHECKS: Dict[str, Check] = {}


def check(function: Check) -> Check:
    CHECKS[function.__name__] = function
    return function


def names(path: Path) -> List[str]:
    return sorted(os.listdir(path))


def raises(code: int, function: Callable[[], object]) -> None:
    try:
        function()
    except OSError as e:
        assert e.errno == code, f"{e!r}, expected {errno.errorcode[code]}"
    else:
        raise AssertionError(f"no {errno.errorcode[code]}")


# -- the checks, run inside the namespaces against SOURCE (s) and its mount (m) -----


@check
def lookups_ignore_case(s: Path, m: Path) -> None:
    os.makedirs(m / "lookup/hElLo/WoRlD")
    st = os.stat(m / "lookup/hello/world")
    assert os.stat(m / "lookup/HELLO/WORLD").st_ino == st.st_ino
    assert os.stat(m / "LOOKUP/Hello/World").st_ino == st.st_ino
    raises(errno.ENOENT, lambda: os.stat(m / "lookup/hello/word"))


@check
def case_is_preserved(s: Path, m: Path) -> None:
    os.makedirs(m / "preserve/hElLo")
    (m / "preserve/ReadMe.TXT").write_text("x")
    assert names(m / "preserve") == ["ReadMe.TXT", "hElLo"]
    assert names(s / "preserve") == ["ReadMe.TXT", "hElLo"]


@check
def unicode_folding(s: Path, m: Path) -> None:
    (m / "unicode").mkdir()
    (m / "unicode/straße").write_text("street")
    (m / "unicode/ÉTÉ").write_text("summer")
    assert (m / "unicode/STRASSE").read_text() == "street"
    assert (m / "unicode/Strasse").read_text() == "street"
    assert (m / "unicode/été").read_text() == "summer"
    assert names(s / "unicode") == ["straße", "ÉTÉ"]


@check
def creating_an_existing_name(s: Path, m: Path) -> None:
    d = m / "create"
    d.mkdir()
    (d / "readme.txt").write_text("one")
    with open(d / "README.txt", "w") as f:  # O_CREAT|O_TRUNC opens the existing file
        f.write("two")
    assert names(s / "create") == ["readme.txt"]
    assert (s / "create/readme.txt").read_text() == "two"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    raises(errno.EEXIST, lambda: os.open(d / "ReadMe.TXT", flags))
    (d / "Sub").mkdir()
    raises(errno.EEXIST, lambda: os.mkdir(d / "SUB"))
    raises(errno.EEXIST, lambda: os.symlink("x", d / "README.TXT"))
    raises(errno.EEXIST, lambda: os.link(d / "readme.txt", d / "README.txt"))
    raises(errno.EEXIST, lambda: os.mkfifo(d / "sub"))
    assert names(s / "create") == ["Sub", "readme.txt"]


@check
def renaming_the_case_only(s: Path, m: Path) -> None:
    d = m / "rename"
    d.mkdir()
    (d / "readme.txt").write_text("text")
    os.rename(d / "readme.txt", d / "README.txt")
    assert names(s / "rename") == ["README.txt"]
    assert (d / "readme.txt").read_text() == "text"
    (d / "Dir").mkdir()
    (d / "Dir/file").write_text("inside")
    os.rename(d / "Dir", d / "DIR")
    assert names(s / "rename") == ["DIR", "README.txt"]
    assert (d / "dir/FILE").read_text() == "inside"
    if shutil.which("busybox"):  # mv(1) that asks rename(2) (GNU mv compares inodes first)
        subprocess.run(["busybox", "mv", str(d / "README.txt"), str(d / "Readme.txt")],
                       check=True)
        assert names(s / "rename") == ["DIR", "Readme.txt"]


@check
def renaming_onto_a_name_folding_alike(s: Path, m: Path) -> None:
    d = m / "replace"
    d.mkdir()
    (d / "Foo").write_text("old")
    (d / "bar").write_text("new")
    os.rename(d / "bar", d / "FOO")  # replaces Foo, keeps the spelling asked for
    assert names(s / "replace") == ["FOO"]
    assert (d / "foo").read_text() == "new"
    (d / "baz").write_text("baz")
    raises(errno.EEXIST, lambda: _rename_noreplace(d / "baz", d / "Foo"))
    assert names(s / "replace") == ["FOO", "baz"]


def _rename_noreplace(old: Path, new: Path) -> None:
    from fim.runtime import libc

    libc.function("renameat2")(-100, os.fsencode(old), -100, os.fsencode(new), 1)


@check
def names_differing_only_by_case_in_source(s: Path, m: Path) -> None:
    (s / "collide").mkdir()
    (s / "collide/Name").write_text("upper")
    (s / "collide/name").write_text("lower")
    d = m / "collide"
    assert names(d) == ["Name", "name"]
    assert (d / "Name").read_text() == "upper"
    assert (d / "name").read_text() == "lower"
    # Neither exact: the first real name in sorted (code point) order.
    assert (d / "NAME").read_text() == "upper"
    assert (d / "nAmE").read_text() == "upper"
    os.unlink(d / "NAME")  # removes "Name"; "name" is then the only match
    assert names(s / "collide") == ["name"]
    assert (d / "NAME").read_text() == "lower"


@check
def changes_behind_the_mount_are_seen(s: Path, m: Path) -> None:
    d = m / "behind"
    d.mkdir()
    (d / "first").write_text("1")
    assert (d / "FIRST").read_text() == "1"  # the directory's names are now cached
    (s / "behind/Second").write_text("2")
    assert (d / "SECOND").read_text() == "2"
    assert names(d) == ["Second", "first"]
    (s / "behind/Second").unlink()
    (s / "behind/second").write_text("3")
    assert (d / "SECOND").read_text() == "3"
    os.unlink(s / "behind/second")
    raises(errno.ENOENT, lambda: os.stat(d / "SECOND"))
    (d / "cached").write_text("x")
    os.stat(d / "cached")  # the kernel now holds this name and its attributes for 1 s
    os.unlink(s / "behind/cached")
    (d / "cached").write_text("again")  # created anew, not ENOENT from the old entry
    assert (s / "behind/cached").read_text() == "again"


@check
def changes_through_another_spelling(s: Path, m: Path) -> None:
    d = m / "spelling"
    d.mkdir()
    (d / "data").write_text("old")
    assert (d / "data").read_text() == "old"  # the exact name's entry and attributes cached
    (d / "DATA").write_text("newer")
    assert os.stat(d / "data").st_size == 5 and (d / "data").read_text() == "newer"
    os.rename(d / "DATA", d / "other")
    raises(errno.ENOENT, lambda: os.stat(d / "data"))
    assert (d / "other").read_text() == "newer"
    os.unlink(d / "OTHER")
    raises(errno.ENOENT, lambda: os.stat(d / "other"))
    (d / "other").write_text("back")
    assert names(s / "spelling") == ["other"]
    os.mkdir(d / "Dir")
    os.stat(d / "Dir")
    os.rmdir(d / "DIR")
    raises(errno.ENOENT, lambda: os.stat(d / "Dir"))


@check
def hard_links(s: Path, m: Path) -> None:
    d = m / "hard"
    d.mkdir()
    (d / "a").write_text("shared")
    os.link(d / "A", d / "b")
    st = os.stat(d / "a")
    assert st.st_nlink == 2 and os.stat(d / "B").st_ino == st.st_ino
    assert os.stat(s / "hard/b").st_ino == os.stat(s / "hard/a").st_ino
    with open(d / "b", "a") as f:
        f.write("!")
    assert (d / "a").read_text() == "shared!"
    os.unlink(d / "A")
    assert os.stat(d / "b").st_nlink == 1
    assert names(s / "hard") == ["b"]


@check
def symlinks(s: Path, m: Path) -> None:
    d = m / "sym"
    d.mkdir()
    (d / "Target").write_text("pointed")
    os.symlink("Target", d / "Link")
    assert os.readlink(d / "LINK") == "Target"
    assert os.readlink(s / "sym/Link") == "Target"
    assert (d / "link").read_text() == "pointed"
    assert os.path.islink(d / "link")
    os.symlink("nowhere", d / "dangling")
    assert os.readlink(d / "DANGLING") == "nowhere"
    os.utime(d / "dangling", ns=(5 * 10**9, 6 * 10**9), follow_symlinks=False)
    assert os.lstat(s / "sym/dangling").st_mtime_ns == 6 * 10**9


@check
def attributes(s: Path, m: Path) -> None:
    d = m / "attr"
    d.mkdir()
    (d / "f").write_text("0123456789")
    os.chmod(d / "F", 0o640)
    assert os.stat(s / "attr/f").st_mode & 0o7777 == 0o640
    assert os.stat(d / "f").st_mode & 0o7777 == 0o640
    os.utime(d / "F", ns=(10**9, 2 * 10**9))
    assert os.stat(s / "attr/f").st_mtime_ns == 2 * 10**9
    assert os.stat(d / "f").st_atime_ns == 10**9
    os.truncate(d / "F", 4)
    assert os.stat(s / "attr/f").st_size == 4 and (d / "f").read_text() == "0123"
    if os.getuid() == 0 and not _in_user_namespace():
        os.chown(d / "F", 4321, 4322)
        st = os.stat(s / "attr/f")
        assert (st.st_uid, st.st_gid) == (4321, 4322)


def _in_user_namespace() -> bool:
    with open("/proc/self/uid_map") as f:
        return f.read().split() != ["0", "0", "4294967295"]


@check
def extended_attributes(s: Path, m: Path) -> None:
    d = m / "xattr"
    d.mkdir()
    (d / "f").write_text("x")
    os.setxattr(d / "F", "user.casefold", b"value")
    assert os.getxattr(s / "xattr/f", "user.casefold") == b"value"
    assert os.getxattr(d / "f", "user.casefold") == b"value"
    assert "user.casefold" in os.listxattr(d / "F")
    raises(errno.ENODATA, lambda: os.getxattr(d / "f", "user.other"))
    os.removexattr(d / "f", "user.casefold")
    assert "user.casefold" not in os.listxattr(s / "xattr/f")


@check
def append(s: Path, m: Path) -> None:
    d = m / "append"
    d.mkdir()
    for text in ("one ", "two "):
        fd = os.open(d / "LOG", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, text.encode())
        os.close(fd)
    with open(s / "append/LOG", "a") as f:  # behind the mount's back
        f.write("three ")
    fd = os.open(d / "log", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"four")
    os.close(fd)
    assert (s / "append/LOG").read_text() == "one two three four"


@check
def large_sparse_file(s: Path, m: Path) -> None:
    d = m / "sparse"
    d.mkdir()
    with open(d / "big", "wb") as f:
        f.seek(5 * GIB)
        f.write(b"tail")
    assert os.stat(s / "sparse/big").st_size == 5 * GIB + 4
    assert os.stat(d / "BIG").st_size == 5 * GIB + 4
    with open(d / "Big", "rb") as f:
        f.seek(5 * GIB)
        assert f.read() == b"tail"
        f.seek(GIB)
        assert f.read(4) == b"\0\0\0\0"
    fd = os.open(d / "big", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 5 * GIB
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    finally:
        os.close(fd)


@check
def memory_mapping(s: Path, m: Path) -> None:
    d = m / "mmap"
    d.mkdir()
    (d / "map").write_bytes(b"\0" * 8192)
    with open(d / "MAP", "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 8192)
        mapped[4000:4005] = b"hello"
        mapped.flush()
        mapped.close()
    assert (s / "mmap/map").read_bytes()[4000:4005] == b"hello"
    (s / "mmap/other").write_bytes(b"mapped for reading")
    with open(d / "OTHER", "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert mapped[:6] == b"mapped"
        mapped.close()


@check
def statfs_is_the_sources(s: Path, m: Path) -> None:
    a, b = os.statvfs(m), os.statvfs(s)
    for field in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        assert getattr(a, field) == getattr(b, field), field
    assert abs(a.f_bfree - b.f_bfree) < b.f_blocks // 100 + 1000


@check
def sync_and_allocate(s: Path, m: Path) -> None:
    d = m / "alloc"
    d.mkdir()
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert os.stat(s / "alloc/f").st_size == 1 << 20
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@check
def reads_while_a_large_directory_is_listed(s: Path, m: Path) -> None:
    (s / "many").mkdir()
    for i in range(10000):
        os.close(os.open(s / f"many/Entry-{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
    (s / "data").write_bytes(os.urandom(1 << 20) * 16)
    lister = subprocess.Popen(
        [SYSTEM_PYTHON, "-c",
         "import os, sys\n"
         "print('go', flush=True)\n"
         "for _ in range(3):\n"
         "    n = sum(1 for e in os.scandir(sys.argv[1]) if e.stat(follow_symlinks=False))\n"
         "print(n)\n", str(m / "MANY")],
        stdout=subprocess.PIPE, text=True)
    assert lister.stdout is not None
    assert lister.stdout.readline() == "go\n"
    start = time.perf_counter()
    got = 0
    with open(m / "DATA", "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            got += len(chunk)
    elapsed = time.perf_counter() - start
    out, _ = lister.communicate(timeout=60)
    assert got == 16 << 20
    assert out == "10000\n", out
    assert elapsed < 10, elapsed


def inside(source: Path, mount: Path) -> Dict[str, str]:
    """In the namespaces: mount, run every check, unmount, see the server gone."""
    report: Dict[str, str] = {}
    r = subprocess.run(SERVER + [str(source), str(mount)], capture_output=True, text=True,
                       timeout=30)
    report["mount"] = "ok" if (r.returncode, r.stdout, r.stderr) == (0, "", "") else repr(r)
    if r.returncode != 0:
        return report
    for name, function in CHECKS.items():
        try:
            function(source, mount)
            report[name] = "ok"
        except Exception:
            report[name] = traceback.format_exc()
    servers = _servers(mount)
    r = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
    deadline = time.monotonic() + 10
    while _servers(mount) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _servers(mount)
    report["unmount"] = "ok" if r.returncode == 0 and len(servers) == 1 and not left else \
        f"umount: {r.returncode} {r.stderr!r}, servers before {servers}, after {left}"
    r = subprocess.run(SERVER + [str(source), str(mount / "missing")], capture_output=True,
                       text=True, timeout=30)
    lines = r.stderr.splitlines()
    report["mount_failure"] = "ok" if (
        r.returncode != 0 and len(lines) == 1 and lines[0].startswith("E::")
        and not _servers(mount / "missing")) else repr(r)
    r = subprocess.run(SERVER + [str(source)], capture_output=True, text=True, timeout=30)
    report["usage"] = "ok" if r.returncode == 125 and r.stderr.startswith("E::") else repr(r)
    return report


def _servers(mount: Path) -> List[int]:
    """Processes serving `mount` (found by their command line)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mount) in argv and any(b"fim.runtime.casefold" in a for a in argv):
            found.append(int(pid))
    return found


if __name__ == "__main__" and sys.argv[1:2] == ["inside"]:
    sys.path.insert(0, str(SRC))  # the runtime beside this copy (libc for renameat2)
    print(json.dumps(inside(Path(sys.argv[2]), Path(sys.argv[3]))))

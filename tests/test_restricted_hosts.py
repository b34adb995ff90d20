"""Hosts that refuse namespaces, simulated for real: a seccomp filter refusing
CLONE_NEWUSER (or every namespace flag, as a container engine's profile does for
root), and a user namespace whose user.max_user_namespaces is 0 or 1. Each gets one
E:: line with its cause and fix, before anything is mounted, with nothing left and
the data dir unchanged; with FIM_FALLBACK=proot the program runs anyway (FUSE in the
host, proot on top), and nothing of it outlives a killed launcher.

Run as a script, this file is the wrapper that puts the restriction in place and
then executes the command: `python3 test_restricted_hosts.py seccomp MASK -- ARGV`
or `... limit N -- ARGV`. It runs as the test's own identity (root), so that the
ordinary user's command inside (runuser) still gets the host's setuid helpers,
as under a container engine.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

if __name__ != "__main__":
    import pytest
    from conftest import Runner, reap, traces

# CLONE_NEWUSER; and every namespace flag (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET), as Docker's default profile refuses them.
USERNS = 0x10000000
EVERY_NAMESPACE = 0x7E020000
# (AUDIT_ARCH, unshare, clone, clone3) of the machines the tests run on.
CALLS = {"x86_64": (0xC000003E, 272, 56, 435), "aarch64": (0xC00000B7, 97, 220, 435)}


# -- the wrapper ----------------------------------------------------------------


def refusing_program(mask: int) -> bytes:
    """Classic BPF: unshare and clone with a flag of `mask` get EPERM, clone3 ENOSYS
    (its flags are behind a pointer; callers fall back to clone), the rest runs."""
    from fim.runtime.seccomp import assemble

    arch, unshare, clone, clone3 = CALLS[platform.machine()]
    low = 16 + (4 if sys.byteorder == "big" else 0)  # the low half of argument 0
    return assemble([
        (0x20, None, None, 4), (0x15, None, "allow", arch),  # ld arch; jeq
        (0x20, None, None, 0),  # ld nr
        (0x15, "flags", None, unshare), (0x15, "flags", None, clone),
        (0x15, "enosys", "allow", clone3),
        "flags", (0x20, None, None, low), (0x45, "eperm", "allow", mask),  # jset
        "allow", (0x06, None, None, 0x7FFF0000),
        "eperm", (0x06, None, None, 0x00050000 | 1),
        "enosys", (0x06, None, None, 0x00050000 | 38),
    ])


def install_filter(program: bytes) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = ctypes.create_string_buffer(program, len(program))
    fprog = Fprog(len(program) // 8, ctypes.addressof(code))
    if os.getuid() != 0 and libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def hold_namespaces(count: int, uid: int) -> None:
    """`count` processes of user `uid` each holding a user namespace of its own, for as
    long as this process (about to exec the command) lives."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(count):
        ready_r, ready_w = os.pipe()
        if os.fork() == 0:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # the test waits for the end of the command's output
                    os.dup2(null, fd)
                os.setgid(uid)
                os.setuid(uid)
                # PR_SET_PDEATHSIG (after setuid, which clears it): ends with the command.
                libc.prctl(1, signal.SIGKILL, 0, 0, 0)
                ok = libc.unshare(0x10000000) == 0
                os.write(ready_w, b"1" if ok else b"0")
                while True:
                    time.sleep(3600)
            finally:
                os._exit(1)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"1", "a holder could not make its namespace"


def limited_namespace(limit: int, held: int = 0, uid: int = 0) -> None:
    """Continue in a new user (and mount) namespace mapping every id to itself, whose
    user.max_user_namespaces is `limit`: the parent writes the maps (it has CAP_SETUID
    over the new namespace), then the child sets the limit, which only its owner can;
    `held` of them are then taken by user `uid`."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        if libc.unshare(0x10000000 | 0x00020000) != 0:
            os._exit(100)
        os.write(ready_w, b"1")
        os.read(go_r, 1)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write(str(limit))
        hold_namespaces(held, uid)
        return
    os.close(ready_w)
    os.close(go_r)
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 4294967295\n")
    os.write(go_w, b"1")
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status))


def main(args: List[str]) -> None:
    kind, value, separator, argv = args[0], args[1], args[2], args[3:]
    assert separator == "--", args
    if kind == "seccomp":
        install_filter(refusing_program(int(value, 0)))
    elif kind == "limit":  # LIMIT, or LIMIT,HELD,UID
        limited_namespace(*(int(v, 0) for v in value.split(",")))
    else:
        raise SystemExit(f"unknown restriction {kind}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    # The checkout's runtime, for the assembler.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main(sys.argv[1:])


# -- the tests ------------------------------------------------------------------

Restriction = Tuple[str, object]


def restricted(runner: Runner, restriction: Restriction, argv: Sequence[str],
               env: Optional[Dict[str, str]] = None,
               popen: bool = False):  # type: ignore[no-untyped-def]
    """Run `argv` as `runner` under `restriction` (the wrapper runs as ourselves)."""
    kind, value = restriction
    full_env = dict(os.environ)
    full_env.pop("FIM_OVERLAY", None)
    full_env.pop("FIM_DEBUG", None)
    if runner.user is not None:
        full_env.update(HOME=f"/home/{runner.user}", USER=runner.user, LOGNAME=runner.user)
    full_env.update(env or {})
    word = hex(value) if isinstance(value, int) else str(value)
    command = [sys.executable, __file__, kind, word, "--", *runner.argv(argv)]
    if popen:
        return subprocess.Popen(command, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def refused_for(runner: Runner) -> Restriction:
    """The filter that refuses what this identity needs: an ordinary user its user
    namespace; root (which needs none) mount and PID namespaces, as Docker's does."""
    return ("seccomp", USERNS if runner.user is not None else EVERY_NAMESPACE)


def needs_root_wrapper() -> None:
    if os.getuid() != 0:
        pytest.skip("the restrictions are put in place by root (a seccomp filter without "
                    "no_new_privs, a user namespace mapping every id)")


def data_dir(image: Path) -> Path:
    return image.parent / f".{image.name}.data"


def snapshot(root: Path) -> Dict[str, Tuple[int, int, int]]:
    """Every entry under `root`: mode, size, modification time."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            found[os.path.relpath(os.path.join(directory, name), root)] = (
                st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def mount_points() -> List[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def prepared(image: Path, runner: Runner) -> Dict[str, Tuple[int, int, int]]:
    """A data dir with the user's files in it, from an unrestricted run; its snapshot."""
    r = runner.run([str(image), "fim-exec", "sh", "-c", "echo mine > ~/kept"])
    assert r.returncode == 0, r.stderr
    return snapshot(data_dir(image))


def assert_refused(r: subprocess.CompletedProcess, image: Path, before_data: object,
                   before_mounts: List[str], *fragments: str) -> None:
    lines = r.stderr.splitlines()
    assert r.returncode == 125, r.stderr
    assert len(lines) == 1 and lines[0].startswith("E::This host refuses the namespaces the "
                                                    "container needs: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in r.stderr and "Internal error" not in r.stderr
    assert r.stdout == ""
    assert mount_points() == before_mounts
    assert traces(image) == []
    assert snapshot(data_dir(image)) == before_data


def test_a_seccomp_filter_is_named_with_its_fix(image: Path, runner: Runner) -> None:
    needs_root_wrapper()
    before = prepared(image, runner)
    mounts = mount_points()
    # With the keeper on: the refusal comes before one would start.
    r = restricted(runner, refused_for(runner),
                   [str(image), "fim-exec", "cat", "/opt/base/keep"], env={"FIM_KEEP": "60"})
    assert_refused(r, image, before, mounts, "a seccomp filter refuses new namespaces",
                   "--security-opt seccomp=unconfined", "FIM_FALLBACK=proot")


def test_debug_shows_the_evidence(image: Path, runner: Runner) -> None:
    needs_root_wrapper()
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "true"],
                   env={"FIM_DEBUG": "1"})
    assert r.returncode == 125, r.stderr
    lines = r.stdout.splitlines()
    assert "D::Host: seccomp: mode 2, 1 filter(s)" in lines, r.stdout
    asked = "CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID" if runner.user else "CLONE_NEWNS|CLONE_NEWPID"
    assert f"D::Refused: unshare({asked}): Operation not permitted (EPERM)" in lines, r.stdout
    assert any(line.startswith("D::Host: user.max_user_namespaces = ") for line in lines)


def test_root_needs_no_user_namespace(image: Path, runner: Runner) -> None:
    """Where it does not apply: root runs under a filter on user namespaces alone, and
    in a user namespace that allows none."""
    needs_root_wrapper()
    if runner.user is not None:
        pytest.skip("an ordinary user needs a user namespace (the tests above)")
    for restriction in (("seccomp", USERNS), ("limit", 0)):
        r = restricted(runner, restriction, [str(image), "fim-exec", "cat", "/opt/base/keep"])
        assert (r.returncode, r.stdout) == (0, "keep\n"), (restriction, r.stderr)


def test_max_user_namespaces_0_is_named_with_its_sysctl(image: Path, runner: Runner) -> None:
    needs_root_wrapper()
    if runner.user is None:
        pytest.skip("root makes no user namespace (test_root_needs_no_user_namespace)")
    before = prepared(image, runner)
    mounts = mount_points()
    r = restricted(runner, ("limit", 0), [str(image), "fim-exec", "cat", "/opt/base/keep"])
    assert_refused(r, image, before, mounts, "user.max_user_namespaces = 0",
                   "sudo sysctl -w user.max_user_namespaces=15000",
                   "/etc/sysctl.d/60-fim-userns.conf")


def test_a_limit_of_one_leaves_bubblewrap_none(image: Path, runner: Runner) -> None:
    """The instance's own user namespace would be allowed, bubblewrap's nested one not:
    the probe makes both, and says so before anything is mounted."""
    needs_root_wrapper()
    if runner.user is None:
        pytest.skip("root makes no user namespace")
    before = prepared(image, runner)
    mounts = mount_points()
    r = restricted(runner, ("limit", 1), [str(image), "fim-exec", "true"],
                   env={"FIM_DEBUG": "1"})
    assert ("D::Refused: unshare(CLONE_NEWUSER) nested, as bubblewrap does: No space left "
            "on device (ENOSPC)") in r.stdout.splitlines(), r.stdout
    r = restricted(runner, ("limit", 1), [str(image), "fim-exec", "true"])
    assert_refused(r, image, before, mounts,
                   "as many namespaces as the host allows (user.max_user_namespaces = 1)")


def contents(root: Path) -> Dict[str, Tuple[int, int, int]]:
    """The snapshot of files alone: a run that got as far as its namespaces made and
    removed its work dir, which changes its parent's time, not the user's files."""
    return {k: v for k, v in snapshot(root).items() if not os.path.isdir(root / k)}


def test_a_limit_reached_by_the_instance_itself(image: Path, runner: Runner) -> None:
    """No evidence announces it (the limit is not 0 or 1), so the real call meets it:
    user.max_user_namespaces = 2 with two already held, the instance's own unshare is
    refused; with one held, bubblewrap's nested one is, after the layers were mounted
    (and unmounted again). The same one line either way."""
    needs_root_wrapper()
    if runner.user is None:
        pytest.skip("root makes no user namespace")
    prepared(image, runner)
    before = contents(data_dir(image))
    mounts = mount_points()
    for held, bwrap_said in ((2, False), (1, True)):
        r = restricted(runner, ("limit", f"2,{held},{runner.uid}"),
                       [str(image), "fim-exec", "true"])
        lines = r.stderr.splitlines()
        assert r.returncode == 125, (held, r.stderr)
        assert lines[-1] == ("E::This host refuses the namespaces the container needs: this "
                             "user has as many namespaces as the host allows "
                             "(user.max_user_namespaces = 2). Fix: end programs that hold "
                             "namespaces (sandboxes, containers), or raise the limit: sudo "
                             "sysctl -w user.max_user_namespaces=15000 (for good: echo "
                             "user.max_user_namespaces=15000 | sudo tee "
                             "/etc/sysctl.d/60-fim-userns.conf). Or run without them: "
                             "FIM_FALLBACK=proot (weaker isolation)"), (held, r.stderr)
        assert len(lines) == (2 if bwrap_said else 1), r.stderr  # bubblewrap's own line
        assert "Internal error" not in r.stderr and "Traceback" not in r.stderr
        assert mount_points() == mounts
        assert wait_for(lambda: traces(image) == []), traces(image)  # the holders end too
        assert contents(data_dir(image)) == before
        assert list((data_dir(image) / "work").iterdir()) == []


# -- the fallback ---------------------------------------------------------------


def needs_fallback_tools() -> None:
    needs_root_wrapper()
    if shutil.which("proot") is None:
        pytest.skip("proot is not installed (scripts/install.sh test)")


def fallback_base(image: Path, runner: Runner) -> Path:
    """Where the runs of this image put their mounts: {FIM_DIR_APP}/fallback."""
    with open(image, "rb") as f:
        f.seek(8192 + 72)
        build_id = f.read(32).rstrip(b"\0").decode()
    for top in ("/tmp/fim", f"/tmp/fim-{runner.uid}"):
        if os.path.isdir(top) and os.stat(top).st_uid == runner.uid:
            return Path(top) / "app" / build_id / "fallback"
    return Path(f"/tmp/fim-{runner.uid}") / "app" / build_id / "fallback"


def marked(base: Path) -> List[int]:
    """Live processes of fallback runs under `base`: named by it, or marked with it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if str(base).encode() + b"/" in cmdline + environ:
            found.append(int(entry))
    return found


def mounts_under(base: Path) -> List[str]:
    return [p for p in mount_points() if p.startswith(str(base) + "/")]


@pytest.fixture
def base(image: Path, runner: Runner):  # type: ignore[no-untyped-def]
    """The image's fallback directory; whatever a failing test leaves there goes."""
    where = fallback_base(image, runner)
    yield where
    for pid in marked(where):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    reap(where)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def home_of(runner: Runner) -> str:
    return "root" if runner.user is None else f"home/{runner.user}"


FALLBACK = {"FIM_FALLBACK": "proot"}


def test_fallback_runs_the_program(image: Path, runner: Runner, base: Path) -> None:
    needs_fallback_tools()
    mounts = mount_points()
    script = "cat /opt/base/keep; echo written > ~/from-fallback; exit 3"
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "sh", "-c", script],
                   env={**FALLBACK, "FIM_DEBUG": "1"})
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines()[-1] == "keep", r.stdout
    assert "D::Fallback: proot without namespaces, FUSE_OVERLAYFS overlay" in r.stdout
    assert r.stderr == ""
    upper = data_dir(image) / "data" / home_of(runner) / "from-fallback"
    assert upper.read_text() == "written\n"  # in the upper directory, the user's own
    assert upper.stat().st_uid == runner.uid
    assert mount_points() == mounts and marked(base) == [] and traces(image) == []
    assert not any(base.iterdir()) and not any((data_dir(image) / "work").iterdir())
    # A namespaced run sees it: the upper dir is in a form every backend reads.
    r = runner.run([str(image), "fim-exec", "cat", "/opt/base/keep", f"/{home_of(runner)}/"
                    "from-fallback"])
    assert (r.returncode, r.stdout) == (0, "keep\nwritten\n"), r.stderr


def test_fallback_exit_codes(image: Path, runner: Runner, base: Path) -> None:
    needs_fallback_tools()
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "no-such-program"],
                   env=FALLBACK)
    assert r.returncode == 127, r.stderr
    assert r.stderr == "E::'no-such-program' was not found in the container\n"
    # A program killed by signal N: 128 + N, as the container's shell reports it (proot's
    # own code would be 255, or that of the last process to end).
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "sh", "-c",
                                                 "kill -TERM $$"], env=FALLBACK)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "sh", "-c",
                                                 "(sleep 0.3; exit 0) & exit 7"], env=FALLBACK)
    assert r.returncode == 7, r.stderr
    assert mounts_under(base) == [] and marked(base) == []


def test_fallback_under_the_namespace_limit(image: Path, runner: Runner, base: Path) -> None:
    """max_user_namespaces 0, as an ordinary user: the same fallback (with the unionfs
    overlay: fuse-overlayfs misreads the simulation's namespace, which maps every id
    and so looks like the host's own, and refuses lookups of symbolic links)."""
    needs_fallback_tools()
    if runner.user is None:
        pytest.skip("root makes no user namespace")
    r = restricted(runner, ("limit", 0), [str(image), "fim-exec", "sh", "-c",
                                          "cat /opt/base/keep; echo x > ~/limited"],
                   env={**FALLBACK, "FIM_OVERLAY": "unionfs"})
    assert (r.returncode, r.stdout, r.stderr) == (0, "keep\n", "")
    assert (data_dir(image) / "data" / home_of(runner) / "limited").read_text() == "x\n"
    assert traces(image) == []


def started(image: Path, runner: Runner, base: Path, script: str) -> Tuple[object, int]:
    """A fallback run of `script`, once its overlay is mounted; its launcher's pid."""
    proc = restricted(runner, refused_for(runner), [str(image), "fim-exec", "sh", "-c", script],
                      env=FALLBACK, popen=True)
    assert wait_for(lambda: len(mounts_under(base)) >= 2), "the run never mounted"
    runs = [p for p in base.iterdir() if p.name.isdigit()]
    assert len(runs) == 1, runs
    return proc, int(runs[0].name)


def children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def left_over(image: Path, base: Path) -> List[str]:
    found = [f"mount {p}" for p in mounts_under(base)]
    found += [f"process {p}" for p in marked(base)]
    found += [f"directory {p}" for p in base.iterdir()]
    found += [f"work dir {p}" for p in (data_dir(image) / "work").iterdir()]
    return found + traces(image)


def test_fallback_killed_launcher_leaves_nothing(image: Path, runner: Runner,
                                                 base: Path) -> None:
    """SIGKILL of the launcher: the watcher kills the program and what it started,
    unmounts and removes the run's directories."""
    needs_fallback_tools()
    proc, launcher = started(image, runner, base, "sleep 100 & sleep 200")
    assert marked(base), "the program is not marked"
    os.kill(launcher, signal.SIGKILL)
    proc.wait(timeout=30)  # type: ignore[attr-defined]
    assert wait_for(lambda: left_over(image, base) == []), left_over(image, base)


def test_fallback_next_run_sweeps_what_a_killed_watcher_left(image: Path, runner: Runner,
                                                             base: Path) -> None:
    """Launcher and watcher both SIGKILLed: mounts and processes stay until the next
    fallback run of the image, which removes them before its own."""
    needs_fallback_tools()
    proc, launcher = started(image, runner, base, "sleep 100 & sleep 200")
    watcher = [p for p in children(launcher)
               if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"app.flatimage fim-fallback")]
    assert len(watcher) == 1, children(launcher)
    # The launcher is stopped first: between the two kills it would see its watcher
    # die and unwind its own mounts, and nothing would be left to sweep. Its parent
    # (runuser for the ordinary user) stops itself on seeing it stop, at a moment of
    # its own: woken until the run has ended.
    parent = int(Path(f"/proc/{launcher}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    os.kill(launcher, signal.SIGSTOP)
    os.kill(watcher[0], signal.SIGKILL)
    os.kill(launcher, signal.SIGKILL)

    def ended() -> bool:
        try:
            os.kill(parent, signal.SIGCONT)
        except ProcessLookupError:
            pass  # it has ended
        return proc.poll() is not None  # type: ignore[attr-defined]

    assert wait_for(ended), "the run did not end"
    time.sleep(0.5)
    assert mounts_under(base) and marked(base), "nothing was left to sweep"
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "true"], env=FALLBACK)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: left_over(image, base) == []), left_over(image, base)


def test_fallback_gives_what_the_program_leaves_its_grace(image: Path, runner: Runner,
                                                          base: Path) -> None:
    """The program's end is the end of what it started: SIGTERM at once (a helper that
    saves its state then does so), SIGKILL after FIM_EXIT_GRACE for one that ignores it."""
    needs_fallback_tools()
    helper = ("(trap 'echo saved > ~/state; exit 0' TERM; while :; do sleep 0.1; done) & "
              "sleep 0.3; exit 4")
    began = time.monotonic()
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "sh", "-c", helper],
                   env=FALLBACK)
    assert r.returncode == 4, r.stderr
    assert time.monotonic() - began < 5
    assert (data_dir(image) / "data" / home_of(runner) / "state").read_text() == "saved\n"
    began = time.monotonic()
    r = restricted(runner, refused_for(runner),
                   [str(image), "fim-exec", "sh", "-c", "trap '' TERM; sleep 100 & exit 0"],
                   env={**FALLBACK, "FIM_EXIT_GRACE": "1"})
    took = time.monotonic() - began
    assert r.returncode == 0, r.stderr
    assert 1 <= took < 8, took
    assert left_over(image, base) == [], left_over(image, base)


def test_fallback_refuses_casefold(image: Path, runner: Runner, base: Path) -> None:
    needs_fallback_tools()
    r = runner.run([str(image), "fim-casefold", "on"])
    assert r.returncode == 0, r.stderr
    r = restricted(runner, refused_for(runner), [str(image), "fim-exec", "true"], env=FALLBACK)
    assert r.returncode == 125
    assert r.stderr == ("E::casefold needs the namespaces this host refuses; FIM_FALLBACK "
                        "cannot run this image\n")
    assert mounts_under(base) == []

"""The diagnosis of hosts that refuse namespaces, from fake /proc directories; the
fallback's pure parts (proot's command line, binds, the mount table)."""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

from fim.runtime import hostcheck
from fim.runtime.config import fallback
from fim.runtime.errors import FimError
from fim.runtime.fallback import proot, watch
from fim.runtime.hostcheck import Failure

PYTHON = "/usr/bin/python3.12"
ROOTLESS = "CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID"
# CapEff of an ordinary user, and of root with every capability.
NO_CAPS = "0000000000000000"
ALL_CAPS = "000001ffffffffff"


def fake_proc(tmp_path: Path, sysctls: Dict[str, str], seccomp: int = 0, filters: int = 0,
              caps: str = NO_CAPS, label: Optional[str] = None) -> hostcheck.Evidence:
    """The evidence a host with these sysctls and this process's status would show."""
    sys_dir, self_dir = tmp_path / "sys", tmp_path / "self"
    for name, value in sysctls.items():
        path = sys_dir.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    self_dir.mkdir()
    (self_dir / "status").write_text(
        f"Name:\tpython3\nCapEff:\t{caps}\nNoNewPrivs:\t0\nSeccomp:\t{seccomp}\n"
        f"Seccomp_filters:\t{filters}\n")
    if label is not None:
        (self_dir / "attr" / "apparmor").mkdir(parents=True)
        (self_dir / "attr" / "apparmor" / "current").write_text(label + "\n")
    return hostcheck.evidence(str(sys_dir), str(self_dir))


DEBIAN = {"user.max_user_namespaces": "96362", "user.max_mnt_namespaces": "96362",
          "user.max_pid_namespaces": "96362"}
UBUNTU = {**DEBIAN, "kernel.apparmor_restrict_unprivileged_userns": "1",
          "kernel.unprivileged_userns_clone": "1"}


def test_evidence_is_read_from_the_directories_given(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, UBUNTU, seccomp=2, filters=3, caps=ALL_CAPS, label="unconfined")
    assert ev.value("kernel.apparmor_restrict_unprivileged_userns") == 1
    assert ev.value("user.max_user_namespaces") == 96362
    assert (ev.seccomp, ev.filters, ev.cap_sys_admin, ev.apparmor) == (2, 3, True, "unconfined")
    assert "kernel.apparmor_restrict_unprivileged_userns = 1" in ev.lines()
    assert "seccomp: mode 2, 3 filter(s)" in ev.lines()


def test_a_kernel_without_these_sysctls_shows_none(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {})
    assert ev.sysctls == ()
    assert ev.value("user.max_user_namespaces") is None
    assert ev.apparmor == ""
    assert not hostcheck.suspect(ev, 1000)


def _printf_output(fix: str) -> str:
    """What the message's own `printf '...'` command writes, run by the shell."""
    found = re.search(r"printf ('[^']*')", fix)
    assert found, fix
    return subprocess.run(["sh", "-c", f"printf {found.group(1)}"], capture_output=True,
                          text=True, check=True).stdout


def test_ubuntu_apparmor_gets_a_profile_for_the_interpreter_and_the_sysctl(
        tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, UBUNTU, label="unconfined")
    assert hostcheck.suspect(ev, 1000)
    d = hostcheck.diagnose(Failure(hostcheck.ID_MAP, errno.EPERM, ROOTLESS), ev, 1000, PYTHON)
    assert "AppArmor" in d.cause and "kernel.apparmor_restrict_unprivileged_userns = 1" in d.cause
    path, text = hostcheck.apparmor_profile(PYTHON)
    assert path == "/etc/apparmor.d/fim-python3.12"
    assert f"profile fim-python3.12 {PYTHON} flags=(unconfined) {{\n  userns,\n}}" in text
    assert _printf_output(d.fix) == text  # the command writes exactly the profile
    assert f"sudo tee {path} >/dev/null && sudo apparmor_parser -r {path}" in d.fix
    assert "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in d.fix
    assert ("echo kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee "
            "/etc/sysctl.d/60-fim-userns.conf") in d.fix


def test_a_confined_program_is_told_to_extend_its_profile(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, UBUNTU, label="terminal-sandbox (enforce)")
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EACCES, ROOTLESS), ev, 1000, PYTHON)
    assert "'terminal-sandbox (enforce)'" in d.cause
    assert "'userns,'" in d.fix


def test_max_user_namespaces_0_gets_its_sysctl(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {**DEBIAN, "user.max_user_namespaces": "0"})
    assert hostcheck.suspect(ev, 1000)
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.ENOSPC, ROOTLESS), ev, 1000, PYTHON)
    assert "user.max_user_namespaces = 0" in d.cause
    assert d.fix == ("sudo sysctl -w user.max_user_namespaces=15000 (for good: echo "
                     "user.max_user_namespaces=15000 | sudo tee "
                     "/etc/sysctl.d/60-fim-userns.conf)")


def test_max_mnt_namespaces_0_is_named_for_root_too(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {**DEBIAN, "user.max_mnt_namespaces": "0"}, caps=ALL_CAPS)
    assert hostcheck.suspect(ev, 0)
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.ENOSPC, "CLONE_NEWNS|CLONE_NEWPID"),
                           ev, 0, PYTHON)
    assert "user.max_mnt_namespaces = 0" in d.cause
    assert "user.max_mnt_namespaces=15000" in d.fix


def test_the_limit_reached_is_told_from_the_limit_turned_off(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {**DEBIAN, "user.max_user_namespaces": "10"})
    assert not hostcheck.suspect(ev, 1000)  # only the real call can tell
    d = hostcheck.diagnose(Failure(hostcheck.NESTED, errno.ENOSPC, "CLONE_NEWUSER"), ev, 1000,
                           PYTHON)
    assert "as many namespaces as the host allows (user.max_user_namespaces = 10)" in d.cause
    assert "sudo sysctl -w user.max_user_namespaces=15000" in d.fix
    ev = fake_proc(tmp_path / "big", {**DEBIAN, "user.max_user_namespaces": "20000"})
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.ENOSPC, ROOTLESS), ev, 1000, PYTHON)
    assert "sudo sysctl -w user.max_user_namespaces=40000" in d.fix


def test_a_limit_of_one_leaves_bubblewrap_none_and_is_probed(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {**DEBIAN, "user.max_user_namespaces": "1"}, caps=ALL_CAPS)
    assert hostcheck.suspect(ev, 1000)
    assert not hostcheck.suspect(ev, 0)  # root's bubblewrap makes no user namespace


def test_old_debian_gets_unprivileged_userns_clone(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, {**DEBIAN, "kernel.unprivileged_userns_clone": "0"},
                   caps=ALL_CAPS)
    assert hostcheck.suspect(ev, 1000)
    assert not hostcheck.suspect(ev, 0)  # root is not concerned
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EPERM, ROOTLESS), ev, 1000, PYTHON)
    assert "kernel.unprivileged_userns_clone = 0" in d.cause
    assert "sudo sysctl -w kernel.unprivileged_userns_clone=1" in d.fix


def test_a_seccomp_filter_is_a_container_engines_profile(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, DEBIAN, seccomp=2, filters=1)
    assert hostcheck.suspect(ev, 1000)
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EPERM, ROOTLESS), ev, 1000, PYTHON)
    assert "seccomp filter" in d.cause and "1 filter(s)" in d.cause
    assert "--security-opt seccomp=unconfined" in d.fix
    assert "SYS_ADMIN" not in d.fix


def test_container_root_without_cap_sys_admin(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, DEBIAN, seccomp=2, filters=1, caps="00000000a80425fb")
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EPERM, "CLONE_NEWNS|CLONE_NEWPID"),
                           ev, 0, PYTHON)
    assert "--security-opt seccomp=unconfined" in d.fix and "--cap-add SYS_ADMIN" in d.fix
    ev = fake_proc(tmp_path / "nofilter", DEBIAN, caps="00000000a80425fb")
    assert hostcheck.suspect(ev, 0)
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EPERM, "CLONE_NEWNS"), ev, 0, PYTHON)
    assert "lacks CAP_SYS_ADMIN" in d.cause


def test_a_refusal_nothing_explains_blames_a_security_module(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, DEBIAN)
    assert not hostcheck.suspect(ev, 1000)
    d = hostcheck.diagnose(Failure(hostcheck.UNSHARE, errno.EPERM, ROOTLESS), ev, 1000, PYTHON)
    assert "security module" in d.cause


def test_the_message_is_one_line_with_cause_fix_and_fallback(tmp_path: Path) -> None:
    ev = fake_proc(tmp_path, UBUNTU, label="unconfined")
    failure = Failure(hostcheck.ID_MAP, errno.EPERM, ROOTLESS)
    refused = hostcheck.Refused(failure, ev, hostcheck.diagnose(failure, ev, 1000, PYTHON))
    assert isinstance(refused, FimError) and refused.code == 125
    assert "\n" not in refused.message
    assert refused.message.startswith("This host refuses the namespaces the container needs: ")
    assert "Fix: " in refused.message and refused.message.endswith(
        "FIM_FALLBACK=proot (weaker isolation)")
    assert failure.describe() == "writing uid_map/gid_map: Operation not permitted (EPERM)"


def test_fim_fallback_values() -> None:
    assert fallback({}) == ""
    assert fallback({"FIM_FALLBACK": "proot"}) == "proot"
    with pytest.raises(FimError) as e:
        fallback({"FIM_FALLBACK": "chroot"})
    assert e.value.code == 125 and "'chroot'" in e.value.message


def test_proot_argv() -> None:
    argv = proot.argv(["/usr/bin/proot"], "/r/mount", [("/dev", "/dev"), ("/h/p", "/etc/passwd")],
                      "/home/u", False, ["sh", "-c", "true"])
    assert argv == ["/usr/bin/proot", "-r", "/r/mount", "-b", "/dev:/dev", "-b",
                    "/h/p:/etc/passwd", "-w", "/home/u", "sh", "-c", "true"]
    assert "-0" in proot.argv(["proot"], "/r", [], "/root", True, ["id"])


def test_bubblewrap_binds_become_proot_binds(tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.mkdir()
    options = ["--bind-try", str(there), "/there", "--ro-bind-try", str(tmp_path / "gone"),
               "/gone", "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf", "--perms", "0700",
               "--dir", "/run/user/1000", "--dev-bind", "/dev/dri", "/dev/dri",
               "--bind", "/a:b", "/c"]
    binds, notes = proot.binds(options)
    assert binds == [(str(there), "/there"), ("/etc/resolv.conf", "/etc/resolv.conf"),
                     ("/dev/dri", "/dev/dri")]
    assert any("writable" in n and "resolv.conf" in n for n in notes)
    assert "--perms 0700: no proot equivalent" in notes
    assert "--dir /run/user/1000: no proot equivalent" in notes
    assert any("':'" in n for n in notes)


def test_mounts_under_a_directory_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw - ext4 /dev/root rw\n"
        "90 22 0:50 / /tmp/fim/app/x/fallback/7/layers/0 ro - fuse.squashfuse_ll s rw\n"
        "91 22 0:51 / /tmp/fim/app/x/fallback/7/mount rw - fuse.fuse-overlayfs f rw\n"
        "92 22 0:52 / /tmp/fim/app/x/fallback/77/mount rw - fuse f rw\n"
        "93 22 0:53 / /tmp/fim/app/x/fallback/7/with\\040space rw - fuse f rw\n")
    assert watch.mounts_under("/tmp/fim/app/x/fallback/7", str(info)) == [
        "/tmp/fim/app/x/fallback/7/layers/0", "/tmp/fim/app/x/fallback/7/mount",
        "/tmp/fim/app/x/fallback/7/with space"]
    assert watch.mounts_under("/nowhere", str(info)) == []

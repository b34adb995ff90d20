"""seccomp.py: the BPF assembler; the program for every ABI of the tables, run by a
small interpreter of the instructions it uses; and the program for this machine
installed in a child process by the kernel itself, against the same calls made
without it."""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import pytest

from fim.runtime import seccomp


def _decode(program: bytes) -> List[Tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


def _run(program: bytes, arch: int, nr: int, args: Tuple[int, ...] = ()) -> int:
    """What the kernel would answer for one call (little-endian seccomp_data)."""
    data = struct.pack("<iIQ6Q", nr - (1 << 32) if nr >= 1 << 31 else nr, arch, 0,
                       *(list(args) + [0] * (6 - len(args))))
    insns = _decode(program)
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x35:
            pc += 1 + (jt if acc >= k else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def test_labels_become_forward_offsets() -> None:
    code: List[Union[Tuple[int, Optional[str], Optional[str], int], str]] = [
        (0x20, None, None, 4), (0x15, "b", "a", 7), "a", (0x06, None, None, 1), "b",
            (0x06, None, None, 2)]
    assert _decode(seccomp.assemble(code)) == [(0x20, 0, 0, 4), (0x15, 1, 0, 7),
                                               (0x06, 0, 0, 1), (0x06, 0, 0, 2)]


ALLOW = seccomp.RET_ALLOW
FAKE = seccomp.RET_ERRNO
EPERM = seccomp.RET_ERRNO | errno.EPERM
ENOSYS = seccomp.RET_ERRNO | errno.ENOSYS
EAFNOSUPPORT = seccomp.RET_ERRNO | errno.EAFNOSUPPORT
ABIS = [(machine, abi) for machine, abis in seccomp.MACHINES.items() for abi in abis]


@pytest.mark.parametrize("machine,abi", ABIS, ids=[abi.name for _, abi in ABIS])
@pytest.mark.parametrize("chown", [False, True])
def test_every_abi_refuses_the_same_calls(machine: str, abi: seccomp.Abi, chown: bool) -> None:
    program = seccomp.program(machine, chown)
    assert program is not None
    for name in seccomp.REFUSED:
        if name in abi.calls:
            assert _run(program, abi.arch, abi.calls[name]) == EPERM, name
    assert "uselib" in abi.calls or abi is seccomp.AARCH64  # the only ABI without it
    # Terminal injection, whatever the upper half of the request register holds.
    for request in (seccomp.TIOCSTI, seccomp.TIOCLINUX, seccomp.TIOCSTI | 1 << 32,
                    seccomp.TIOCLINUX | 0xFFFF_FFFF_0000_0000):
        assert _run(program, abi.arch, abi.ioctl, (0, request, 0)) == EPERM, hex(request)
    for request in (0x5413, 0x540F, 0x5410, 0x5412 + (1 << 16)):  # TIOCGWINSZ, (S)PGRP
        assert _run(program, abi.arch, abi.ioctl, (0, request, 0)) == ALLOW, hex(request)
    for family in seccomp.FAMILIES.values():
        assert _run(program, abi.arch, abi.socket, (family, 1, 0)) == ALLOW
        assert _run(program, abi.arch, abi.socket, (family | 1 << 32, 1, 0)) == ALLOW
    for family in (0, 3, 15, 17, 29, 38, 40, 44, 45, 46, 0xFFFFFFFF):
        assert _run(program, abi.arch, abi.socket, (family, 1, 0)) == EAFNOSUPPORT, family
    # Everything else is the kernel's to answer: reads, clone, unshare, mount, ptrace.
    for nr in range(0, 460):
        if nr not in abi.calls.values() and nr not in (abi.ioctl, abi.socket) and not (
                chown and nr in [c[0] for c in abi.chown]):
            assert _run(program, abi.arch, nr, (6, 6, 6, 6)) == ALLOW, nr


@pytest.mark.parametrize("arch,nr,args,answer", [
    (seccomp.X86_64.arch, 92, (0, 6, 12), FAKE),  # chown(path, man, man)
    (seccomp.X86_64.arch, 92, (0, 0, 50), FAKE),  # chown(path, root, staff)
    (seccomp.X86_64.arch, 92, (0, 0, 0), ALLOW),  # to root: the kernel's to answer
    (seccomp.X86_64.arch, 93, (3, 0xFFFFFFFF, 0), ALLOW),  # fchown, uid unchanged
    (seccomp.X86_64.arch, 94, (0, 0xFFFFFFFF, 7), FAKE),  # lchown, gid 7
    (seccomp.X86_64.arch, 260, (0, 0, 6, 6, 0), FAKE),  # fchownat: ids are arguments 2, 3
    (seccomp.X86_64.arch, 260, (0, 0, 0, 0xFFFFFFFF, 0x100), ALLOW),
    (seccomp.X86_64.arch, 2, (0, 6, 6), ALLOW),  # open: not ours
    (seccomp.I386.arch, 212, (0, 6, 6), FAKE),  # chown32 of a 32-bit program
    (seccomp.I386.arch, 182, (0, 6, 6), ALLOW),  # 16-bit chown: left to the kernel
])
def test_only_changes_to_unmapped_ids_are_answered(arch: int, nr: int, args: Tuple[int, ...],
                                                   answer: int) -> None:
    program = seccomp.program("x86_64", foreign_chown=True)
    assert program is not None
    assert _run(program, arch, nr, args) == answer


def test_ownership_rule_only_when_asked() -> None:
    program = seccomp.program("x86_64")
    assert program is not None
    assert _run(program, seccomp.X86_64.arch, 92, (0, 6, 12)) == ALLOW


def test_aarch64_and_its_arm_abi() -> None:
    program = seccomp.program("aarch64", foreign_chown=True)
    assert program is not None
    assert _run(program, seccomp.AARCH64.arch, 54, (0, 0, 6, 6, 0)) == FAKE
    assert _run(program, seccomp.AARCH64.arch, 55, (3, 0, 0)) == ALLOW
    assert _run(program, seccomp.ARM.arch, 54, (0, seccomp.TIOCSTI, 0)) == EPERM  # ioctl
    assert _run(program, seccomp.ARM.arch, 325, (0, 0, 6, 6, 0)) == FAKE  # fchownat
    # The x86_64 numbering means nothing here: aarch64's 16 is not ioctl.
    assert _run(program, seccomp.AARCH64.arch, 16, (0, seccomp.TIOCSTI, 0)) == ALLOW


def test_x32_calls_and_unknown_abis_are_refused() -> None:
    program = seccomp.program("x86_64")
    assert program is not None
    x86_64 = seccomp.X86_64.arch
    assert _run(program, x86_64, 0x40000000 | 39) == ENOSYS  # x32 getpid
    assert _run(program, x86_64, 0x40000000 | 514, (0, seccomp.TIOCSTI, 0)) == ENOSYS  # ioctl
    assert _run(program, x86_64, 0xFFFFFFFF) == ALLOW  # a call skipped by a tracer
    assert _run(program, seccomp.AARCH64.arch, 29, (0, seccomp.TIOCSTI, 0)) == ENOSYS
    assert _run(seccomp.program("aarch64") or b"", x86_64, 39) == ENOSYS


def test_machines_without_a_table() -> None:
    for machine in ("riscv64", "ppc64le", "i686", "armv7l", ""):
        assert seccomp.program(machine) is None


# The kernel's own numbering, where this machine has its headers (Linux's UAPI
# headers, linux-libc-dev); the ARM table has none here.
HEADERS = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
           "i386": "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
           "aarch64": "/usr/include/asm-generic/unistd.h"}


@pytest.mark.parametrize("abi", [seccomp.X86_64, seccomp.I386, seccomp.AARCH64],
                         ids=lambda abi: abi.name)
def test_the_numbers_are_the_kernels(abi: seccomp.Abi) -> None:
    try:
        text = Path(HEADERS[abi.name]).read_text()
    except OSError:
        pytest.skip(f"no {HEADERS[abi.name]}")
    numbers = {m[0]: int(m[1]) for m in re.findall(r"#define __NR_(\w+)\s+(\d+)\s*$", text,
                                                   re.MULTILINE)}
    expected = dict(abi.calls, ioctl=abi.ioctl, socket=abi.socket)
    for name in seccomp.REFUSED + ("ioctl", "socket"):
        assert (name in expected) == (name in numbers), name
        if name in expected:
            assert expected[name] == numbers[name], name
    chown = {"x86_64": ("chown", "fchown", "lchown", "fchownat"),
             "i386": ("chown32", "fchown32", "lchown32", "fchownat"),
             "aarch64": ("fchownat", "fchown")}[abi.name]
    assert [c[0] for c in abi.chown] == [numbers[n] for n in chown]


def test_the_descriptor_holds_the_program() -> None:
    program = seccomp.program("x86_64", True) or b""
    fd = seccomp.as_fd(program)
    try:
        assert os.get_inheritable(fd)
        assert os.read(fd, 65536) == program
    finally:
        os.close(fd)


# The kernel's side: a child installs the program (no_new_privs, then
# PR_SET_SECCOMP) and makes real calls; another makes them without. Numbers that
# are x86_64's or aarch64's; the i386 call is made from machine code with int 0x80.
INSTALL = r"""
import ctypes, json, mmap, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
program = sys.stdin.buffer.read()
if sys.argv[1] == "1":
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, ctypes.get_errno()
"""
CHILD = INSTALL + r"""
machine, path = os.uname().machine, sys.argv[2]
NR = {"x86_64": dict(ioctl=16, keyctl=250, perf_event_open=298, fchown=93, syslog=103,
                     unshare=272, clone3=435, getpid=39),
      "aarch64": dict(ioctl=29, keyctl=219, perf_event_open=241, fchown=55, syslog=116,
                      unshare=97, clone3=435, getpid=172)}[machine]
def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(NR[name]), *[L(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
null = os.open("/dev/null", os.O_RDWR)
mine = os.open(path, os.O_RDWR)
out = {
    "tiocsti": call("ioctl", null, 0x5412, 0),
    "tiocsti_high": call("ioctl", null, 0x5412 | 1 << 32, 0),
    "tioclinux": call("ioctl", null, 0x541C, 0),
    "tiocgwinsz": call("ioctl", null, 0x5413, 0),
    "keyctl": call("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "perf_event_open": call("perf_event_open", 0, 0, -1, -1, 0),
    "syslog": call("syslog", 10, 0, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    "clone3": call("clone3", 0, 0),  # no arguments: EINVAL, unless refused
    "fchown": call("fchown", mine, 4321, 4321),
    "owner": os.fstat(mine).st_uid,
}
for name, family, kind in (("packet", 17, socket.SOCK_RAW), ("unix", 1, socket.SOCK_STREAM),
                           ("inet6", 10, socket.SOCK_DGRAM), ("vsock", 40, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind).close()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
if machine == "x86_64":
    ctypes.set_errno(0)
    out["x32_getpid"] = 0 if libc.syscall(L(0x40000000 | 39)) >= 0 else ctypes.get_errno()
print(json.dumps(out))
"""


# i386's ioctl(fd, TIOCSTI, 0) through int 0x80, from a page of machine code: push rbx;
# mov ebx, edi; mov eax, 54; mov ecx, 0x5412; xor edx, edx; int 0x80; pop rbx; ret.
I386_CHILD = INSTALL + r"""
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex("53" "89fb" "b836000000" "b912540000" "31d2" "cd80" "5b" "c3"))
start = ctypes.addressof(ctypes.c_char.from_buffer(page))
print(-ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(start)(os.open("/dev/null", os.O_RDWR)))
"""


def _calls(program: bytes, install: bool) -> Dict[str, int]:
    with tempfile.NamedTemporaryFile() as f:
        r = subprocess.run([sys.executable, "-c", CHILD, "1" if install else "0", f.name],
                           input=program, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    result: Dict[str, int] = json.loads(r.stdout)
    return result


@pytest.fixture(scope="module")
def kernel() -> Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]:
    """The calls without a program, with it, and with the ownership rule."""
    machine = os.uname().machine
    program = seccomp.program(machine)
    if program is None or not seccomp.supported():
        pytest.skip(f"no seccomp program for {machine} or this kernel")
    return (_calls(program, False), _calls(program, True),
            _calls(seccomp.program(machine, True) or b"", True))


def test_the_kernel_refuses_what_the_program_names(
        kernel: Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]) -> None:
    without, within, _ = kernel
    # /dev/null is no terminal: the kernel's answer is ENOTTY; the program's, EPERM.
    assert without["tiocsti"] == without["tiocsti_high"] == errno.ENOTTY
    assert within["tiocsti"] == within["tiocsti_high"] == within["tioclinux"] == errno.EPERM
    assert within["tiocgwinsz"] == without["tiocgwinsz"] == errno.ENOTTY
    assert without["perf_event_open"] == errno.EFAULT  # reached the kernel (no attributes)
    assert within["perf_event_open"] == within["keyctl"] == within["syslog"] == errno.EPERM
    assert without["keyctl"] in (0, errno.ENOKEY)
    assert within["vsock"] == within["packet"] == errno.EAFNOSUPPORT
    assert without["packet"] in (0, errno.EPERM)  # root may, others not: the kernel's say
    assert within["unix"] == within["inet6"] == 0
    assert within["clone3"] == without["clone3"] == errno.EINVAL  # not refused: glibc uses it
    if "x32_getpid" in within:
        assert within["x32_getpid"] == errno.ENOSYS


def test_the_kernel_refuses_it_to_i386_calls_of_a_64_bit_program() -> None:
    """An x86_64 program can make i386 calls (int 0x80): the i386 numbers are
    filtered as well, ioctl being 54 there."""
    if os.uname().machine != "x86_64" or not seccomp.supported():
        pytest.skip("x86_64 only")
    program = seccomp.program("x86_64") or b""
    answers = []
    for install in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", I386_CHILD, install], input=program,
                           capture_output=True, timeout=60)
        if r.returncode < 0 and install == "0":
            pytest.skip("this kernel runs no i386 calls (no IA32 emulation)")
        assert r.returncode == 0, r.stderr.decode()
        answers.append(int(r.stdout))
    assert answers == [errno.ENOTTY, errno.EPERM]


def test_the_kernel_skips_foreign_chown_only_when_asked(
        kernel: Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]) -> None:
    without, within, chown = kernel
    mine = os.getuid()
    expected = 0 if mine == 0 else errno.EPERM  # only root may give files away
    assert (without["fchown"], without["owner"]) == (expected, 4321 if mine == 0 else mine)
    assert (within["fchown"], within["owner"]) == (without["fchown"], without["owner"])
    assert (chown["fchown"], chown["owner"]) == (0, mine)  # succeeded, changed nothing

"""The seccomp program of every sandboxed program: classic BPF built here, handed to
bubblewrap (`--seccomp FD`, the one option every bubblewrap version has).

One program per run (docs/hardening.md has the table and the reasons):

* `ioctl` TIOCSTI and TIOCLINUX are refused (EPERM): a sandboxed program with the
  user's terminal could otherwise push characters into its input, which the user's
  shell reads and runs once the program has ended (CVE-2017-5226, CVE-2023-28100).
  bubblewrap's `--new-session` would close that too, but it takes the controlling
  terminal away and with it an interactive shell's job control.
* The calls Flatpak's default filter refuses that no desktop program needs:
  the kernel log, the kernel keyrings (the host session's keys are reachable
  through the inherited session keyring), NUMA page moves and policies, quotas,
  process accounting, uselib, perf_event_open (EPERM); socket families beyond
  Unix, IP, netlink and Bluetooth (EAFNOSUPPORT, as a kernel without them answers).
  Namespaces, mounts, ptrace, personality and clone3 stay allowed: programs that
  sandbox themselves (Chromium, Electron, Steam's pressure-vessel, bubblewrap,
  fim) and debuggers need them, and the kernel bounds them to the instance.
* For root over the caller's ids alone (an ordinary user without subordinate
  ids, idmap.py): changes of ownership to ids the instance does not map succeed
  without effect (errno 0, the call skipped). The kernel answers EINVAL, and
  dpkg, fontconfig's and man-db's scripts and most package installs stop there;
  fakeroot and rootless image builders (`--ignore-chown-errors`) answer 0 too.
  Changes to 0 or to "unchanged" (-1) are left to the kernel.

Each ABI a machine runs is filtered with its own numbers: x86_64 with its i386
ABI (32-bit Wine; an x86_64 program can also make i386 calls with `int 0x80`)
and its x32 calls refused, aarch64 with its 32-bit ARM ABI. Other machines get
no program. Numbers are compared on the 32 bits the kernel reads: `ioctl`'s
request, `socket`'s family and the ids are `unsigned int` or `int` there, so the
upper half of the register (TIOCSTI | 1 << 32) is ignored by both.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple, Union

    Calls = Tuple[Tuple[int, int, int], ...]
    Insn = Tuple[int, Optional[str], Optional[str], int]

# linux/filter.h, linux/seccomp.h, linux/audit.h
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K (unsigned)
_RET_K = 0x06  # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000  # | errno; errno 0: the call is skipped and returns 0

# asm-generic/ioctls.h: the same on x86 and ARM.
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# Socket families kept (linux/socket.h): Unix, IPv4, IPv6, netlink (routes,
# interfaces, udev's device events), Bluetooth (emulators' Wii remotes, BlueZ tools).
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_BLUETOOTH": 31}
# The calls refused with EPERM, in the order of the table in docs/hardening.md.
REFUSED = (
    "syslog", "add_key", "request_key", "keyctl", "mbind", "get_mempolicy",
    "set_mempolicy", "migrate_pages", "move_pages", "perf_event_open", "quotactl",
    "quotactl_fd", "acct", "uselib",
)
_X32_BIT = 0x40000000  # __X32_SYSCALL_BIT: x32 calls arrive as x86_64 with this bit
_NO_CALL = 0xFFFFFFFF  # -1: a call a tracer skipped; the kernel answers ENOSYS itself
_UNCHANGED = 0xFFFFFFFF  # (uid_t)-1


@dataclass(frozen=True)
class Abi:
    """One system call ABI: its AUDIT_ARCH_* value and the numbers filtered."""

    name: str
    arch: int
    ioctl: int
    socket: int
    calls: Mapping[str, int]  # REFUSED names -> numbers (a call the ABI lacks is absent)
    chown: Calls  # (number, index of the uid argument, of the gid argument)
    x32: bool = False


# The numbers: arch/x86/entry/syscalls/syscall_{64,32}.tbl, include/uapi/asm-generic/
# unistd.h (aarch64), arch/arm/tools/syscall.tbl. i386 and ARM change ownership with
# the 32-bit-id calls (chown32...); their 16-bit forms are left out (nothing current
# uses them), as aarch64 has only fchown and fchownat.
X86_64 = Abi("x86_64", 0xC000003E, ioctl=16, socket=41, x32=True, calls={
    "syslog": 103, "add_key": 248, "request_key": 249, "keyctl": 250, "mbind": 237,
    "get_mempolicy": 239, "set_mempolicy": 238, "migrate_pages": 256, "move_pages": 279,
    "perf_event_open": 298, "quotactl": 179, "quotactl_fd": 443, "acct": 163,
    "uselib": 134,
}, chown=((92, 1, 2), (93, 1, 2), (94, 1, 2), (260, 2, 3)))  # chown fchown lchown fchownat
I386 = Abi("i386", 0x40000003, ioctl=54, socket=359, calls={
    "syslog": 103, "add_key": 286, "request_key": 287, "keyctl": 288, "mbind": 274,
    "get_mempolicy": 275, "set_mempolicy": 276, "migrate_pages": 294, "move_pages": 317,
    "perf_event_open": 336, "quotactl": 131, "quotactl_fd": 443, "acct": 51, "uselib": 86,
}, chown=((212, 1, 2), (207, 1, 2), (198, 1, 2), (298, 2, 3)))  # chown32 fchown32 lchown32
AARCH64 = Abi("aarch64", 0xC00000B7, ioctl=29, socket=198, calls={
    "syslog": 116, "add_key": 217, "request_key": 218, "keyctl": 219, "mbind": 235,
    "get_mempolicy": 236, "set_mempolicy": 237, "migrate_pages": 238, "move_pages": 239,
    "perf_event_open": 241, "quotactl": 60, "quotactl_fd": 443, "acct": 89,
}, chown=((54, 2, 3), (55, 1, 2)))  # fchownat fchown
ARM = Abi("arm", 0x40000028, ioctl=54, socket=281, calls={
    "syslog": 103, "add_key": 309, "request_key": 310, "keyctl": 311, "mbind": 319,
    "get_mempolicy": 320, "set_mempolicy": 321, "migrate_pages": 400, "move_pages": 344,
    "perf_event_open": 364, "quotactl": 131, "quotactl_fd": 443, "acct": 51, "uselib": 86,
}, chown=((212, 1, 2), (207, 1, 2), (198, 1, 2), (325, 2, 3)))  # chown32 fchown32 lchown32

MACHINES: Dict[str, Tuple[Abi, ...]] = {"x86_64": (X86_64, I386), "aarch64": (AARCH64, ARM)}

_NR, _ARCH, _ARGS = 0, 4, 16

# An instruction: (code, jump-if-true label, jump-if-false label, k), a label
# None for "the next one"; `assemble` resolves them into BPF's forward offsets.


def _arg_low(index: int) -> int:
    """Offset of the 32 bits of argument `index` the kernel reads as an int."""
    return _ARGS + 8 * index + (4 if sys.byteorder == "big" else 0)


def assemble(code: List[Union[Insn, str]]) -> bytes:
    """Instructions and labels (bare strings) to struct sock_filter bytes."""
    where: Dict[str, int] = {}
    insns: List[Insn] = []
    for item in code:
        if isinstance(item, str):
            where[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for i, (op, jt, jf, k) in enumerate(insns):
        offsets = [0 if label is None else where[label] - i - 1 for label in (jt, jf)]
        if any(not 0 <= o <= 255 for o in offsets):
            raise ValueError(f"jump out of range at {i}")
        out += struct.pack("=HBBI", op, offsets[0], offsets[1], k)
    return bytes(out)


def _abi_code(abi: Abi, n: int, foreign_chown: bool) -> List[Union[Insn, str]]:
    """The part of the program for one ABI, its labels suffixed with `n`."""
    allow, eperm, fake = f"allow{n}", f"eperm{n}", f"fake{n}"
    code: List[Union[Insn, str]] = [f"abi{n}", (_LD_W_ABS, None, None, _NR)]
    if abi.x32:
        code.append((_JGE_K, f"x32.{n}", None, _X32_BIT))
    code += [(_JEQ_K, f"ioctl{n}", None, abi.ioctl), (_JEQ_K, f"socket{n}", None, abi.socket)]
    chown = abi.chown if foreign_chown else ()
    for c, (nr, _, _) in enumerate(chown):
        code.append((_JEQ_K, f"chown{n}.{c}", None, nr))
    for name in REFUSED:
        if name in abi.calls:
            code.append((_JEQ_K, eperm, None, abi.calls[name]))
    code.append((_RET_K, None, None, RET_ALLOW))

    code += [f"ioctl{n}", (_LD_W_ABS, None, None, _arg_low(1)),
             (_JEQ_K, eperm, None, TIOCSTI), (_JEQ_K, eperm, allow, TIOCLINUX)]
    code += [f"socket{n}", (_LD_W_ABS, None, None, _arg_low(0))]
    code += [(_JEQ_K, allow, None, family) for family in FAMILIES.values()]
    code.append((_RET_K, None, None, RET_ERRNO | errno.EAFNOSUPPORT))
    for c, (_, uid_arg, gid_arg) in enumerate(chown):
        code.append(f"chown{n}.{c}")
        for i, arg in enumerate((uid_arg, gid_arg)):
            # Each id must be 0 or unchanged for the kernel to see the call.
            mapped = f"chown{n}.{c}.{i}"
            code += [(_LD_W_ABS, None, None, _arg_low(arg)), (_JEQ_K, mapped, None, 0),
                     (_JEQ_K, mapped, fake, _UNCHANGED), mapped]
        code.append((_RET_K, None, None, RET_ALLOW))
    if abi.x32:
        # Another ABI's numbering behind the same AUDIT_ARCH: refused whole, as a
        # kernel built without x32 answers (nothing of a desktop is built for it).
        code += [f"x32.{n}", (_JEQ_K, allow, None, _NO_CALL),
                 (_RET_K, None, None, RET_ERRNO | errno.ENOSYS)]
    code += [allow, (_RET_K, None, None, RET_ALLOW), eperm,
             (_RET_K, None, None, RET_ERRNO | errno.EPERM), fake, (_RET_K, None, None, RET_ERRNO)]
    return code


def program(machine: str, foreign_chown: bool = False) -> Optional[bytes]:
    """The program described above for `machine` (os.uname().machine), with the
    ownership rule when `foreign_chown`; None for a machine without a table."""
    abis = MACHINES.get(machine)
    if abis is None:
        return None
    code: List[Union[Insn, str]] = [(_LD_W_ABS, None, None, _ARCH)]
    code += [(_JEQ_K, f"abi{n}", None, abi.arch) for n, abi in enumerate(abis)]
    # An ABI the machine cannot run: nothing to let through unfiltered.
    code.append((_RET_K, None, None, RET_ERRNO | errno.ENOSYS))
    for n, abi in enumerate(abis):
        code += _abi_code(abi, n, foreign_chown)
    return assemble(code)


def supported() -> bool:
    """Whether this kernel runs seccomp programs: PR_SET_SECCOMP with no program
    answers EFAULT where filters exist, EINVAL where they were not built in."""
    from fim.runtime import libc

    try:
        libc.function("prctl")(22, 2, None, 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    except OSError as e:
        return e.errno == errno.EFAULT
    return False  # unreachable: a NULL program is never accepted


def as_fd(code: bytes) -> int:
    """A readable, inheritable descriptor holding `code` (for `--seccomp FD`)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, code)  # about 1.5 KB: within the pipe's buffer
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end

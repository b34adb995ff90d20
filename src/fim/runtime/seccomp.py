"""Seccomp programs handed to bubblewrap (`--seccomp FD`): classic BPF, built here.

The one program today lets changes of ownership to ids the instance does not map
succeed without effect. Root inside an instance that maps the caller alone (an
ordinary user without subordinate ids, idmap.py) can give files to no one else:
the kernel answers EINVAL, and dpkg, fontconfig's and man-db's scripts and most
package installs stop there. Answering 0 instead is what fakeroot and rootless
image builders (`--ignore-chown-errors`) do: the files stay the caller's, which
inside is root, and the install goes on. Changes to 0 or to "unchanged" (-1)
are left to the kernel, and so is everything else.
"""

from __future__ import annotations

import os
import platform
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union

    Calls = Tuple[Tuple[int, int, int], ...]
    Insn = Tuple[int, Optional[str], Optional[str], int]

# linux/filter.h, linux/seccomp.h, linux/audit.h
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000  # | errno; errno 0: the call is skipped and returns 0

# The calls that change ownership and which of their arguments hold (uid, gid),
# for each architecture a machine runs: x86_64 runs i386 programs too (32-bit
# Wine); aarch64 has only the fd and *at forms. The 16-bit-id calls of i386 are
# left out (nothing current uses them).
CHOWN_CALLS: Dict[str, Tuple[Tuple[int, Calls], ...]] = {
    "x86_64": (
        # AUDIT_ARCH_X86_64: chown, fchown, lchown, fchownat
        (0xC000003E, ((92, 1, 2), (93, 1, 2), (94, 1, 2), (260, 2, 3))),
        # AUDIT_ARCH_I386: lchown32, fchown32, chown32, fchownat
        (0x40000003, ((198, 1, 2), (207, 1, 2), (212, 1, 2), (298, 2, 3))),
    ),
    # AUDIT_ARCH_AARCH64: fchownat, fchown
    "aarch64": ((0xC00000B7, ((54, 2, 3), (55, 1, 2))),),
}

_NR, _ARCH, _ARGS = 0, 4, 16
_UNCHANGED = 0xFFFFFFFF  # (uid_t)-1

# An instruction: (code, jump-if-true label, jump-if-false label, k), a label
# None for "the next one"; `assemble` resolves them into BPF's forward offsets.


def _arg_low(index: int) -> int:
    """Offset of the 32 bits of argument `index` that hold a uid_t."""
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


def foreign_chown_succeeds(machine: Optional[str] = None) -> Optional[bytes]:
    """The program described above for this machine; None where it has no table."""
    machine = machine or platform.machine()
    arches = CHOWN_CALLS.get(machine)
    if arches is None:
        return None
    code: List[Union[Insn, str]] = [(_LD_W_ABS, None, None, _ARCH)]
    for a, (arch, _) in enumerate(arches):
        code.append((_JEQ_K, f"arch{a}", None, arch))
    code.append((_RET_K, None, None, RET_ALLOW))
    for a, (_, calls) in enumerate(arches):
        code += [f"arch{a}", (_LD_W_ABS, None, None, _NR)]
        for n, (nr, _, _) in enumerate(calls):
            code.append((_JEQ_K, f"call{a}.{n}", None, nr))
        code.append((_RET_K, None, None, RET_ALLOW))
        for n, (_, uid_arg, gid_arg) in enumerate(calls):
            code.append(f"call{a}.{n}")
            for i, arg in enumerate((uid_arg, gid_arg)):
                # Each id must be 0 or unchanged for the kernel to see the call.
                mapped = f"call{a}.{n}.{i}"
                code += [
                    (_LD_W_ABS, None, None, _arg_low(arg)),
                    (_JEQ_K, mapped, None, 0),
                    (_JEQ_K, mapped, "fake", _UNCHANGED),
                    mapped,
                ]
            code.append((_RET_K, None, None, RET_ALLOW))
    code += ["fake", (_RET_K, None, None, RET_ERRNO | 0)]
    return assemble(code)


def as_fd(program: bytes) -> int:
    """A readable, inheritable descriptor holding `program` (for `--seccomp FD`)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)  # a few hundred bytes: within the pipe's buffer
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end

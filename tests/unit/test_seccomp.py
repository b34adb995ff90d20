"""seccomp.py: the BPF assembler, and the ownership program run by a small
interpreter of the instructions it uses (the kernel runs it in the install tests)."""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple, Union

import pytest

from fim.runtime import seccomp


def _decode(program: bytes) -> List[Tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


def _run(program: bytes, arch: int, nr: int, args: Tuple[int, ...]) -> int:
    """What the kernel would answer for one call (little-endian seccomp_data)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = _decode(program)
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
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


X86_64, I386 = 0xC000003E, 0x40000003
FAKE, ALLOW = seccomp.RET_ERRNO, seccomp.RET_ALLOW


@pytest.mark.parametrize("arch,nr,args,answer", [
    (X86_64, 92, (0, 6, 12), FAKE),  # chown(path, man, man)
    (X86_64, 92, (0, 0, 50), FAKE),  # chown(path, root, staff)
    (X86_64, 92, (0, 0, 0), ALLOW),  # to root: the kernel's to answer
    (X86_64, 93, (3, 0xFFFFFFFF, 0), ALLOW),  # fchown, uid unchanged
    (X86_64, 94, (0, 0xFFFFFFFF, 7), FAKE),  # lchown, gid 7
    (X86_64, 260, (0, 0, 6, 6, 0), FAKE),  # fchownat: ids are arguments 2 and 3
    (X86_64, 260, (0, 0, 0, 0xFFFFFFFF, 0x100), ALLOW),
    (X86_64, 2, (0, 6, 6), ALLOW),  # open: not ours
    (I386, 212, (0, 6, 6), FAKE),  # chown32 of a 32-bit program
    (0xC00000B7, 92, (0, 6, 6), ALLOW),  # another architecture's numbering: untouched
])
def test_only_changes_to_unmapped_ids_are_answered(arch: int, nr: int, args: Tuple[int, ...],
                                                   answer: int) -> None:
    program = seccomp.foreign_chown_succeeds("x86_64")
    assert program is not None
    assert _run(program, arch, nr, args) == answer


def test_aarch64_and_unknown_machines() -> None:
    program = seccomp.foreign_chown_succeeds("aarch64")
    assert program is not None
    assert _run(program, 0xC00000B7, 54, (0, 0, 6, 6, 0)) == FAKE
    assert _run(program, 0xC00000B7, 55, (3, 0, 0)) == ALLOW
    assert seccomp.foreign_chown_succeeds("riscv64") is None

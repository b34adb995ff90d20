"""Damaged and hostile image files, mutated from a real image with a fixed seed: the
header, the reserved regions, the journal, the payload, the layer chain's sizes,
the layer's bytes, truncations and appended garbage. Each mutant is its own copy,
run once under a time limit: it runs (prints what the image holds, with at most
the W:: lines the contract asks for), or it exits non-zero with one E:: line. Never
a traceback, an `Internal error`, a hang, a program that runs on damaged bytes, or
a mount or daemon left behind.

The default size keeps the suite short; FIM_FUZZ_COUNT=N runs N mutants per
identity, FIM_FUZZ_SEED another campaign (docs/hardening.md).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Set, Tuple

from conftest import Runner, reap

from fim.runtime.image import digest
from fim.runtime.image.header import HEADER_OFFSET, unpack
from fim.runtime.image.reserved import REGIONS

COUNT = int(os.environ.get("FIM_FUZZ_COUNT", "400"))
SEED = int(os.environ.get("FIM_FUZZ_SEED", "20261203"))
# Mutants run side by side: most fail in milliseconds, the rest wait on their mounts.
WORKERS = 3
TIMEOUT = 30.0
EXPECTED = "keep\n"  # /opt/base/keep of the session's image (conftest.BASE_TREE)
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Template:
    data: bytes
    reserved: int
    journal: int
    payload: int
    payload_size: int
    chain: int
    layer: int  # offset of layer 0's bytes
    layer_size: int
    build_id: str


def template(image: Path) -> Template:
    data = image.read_bytes()
    head = unpack(data[HEADER_OFFSET:HEADER_OFFSET + 4096], str(image), len(data))
    (size,) = struct.unpack_from("<Q", data, head.chain_offset)
    assert head.chain_offset + 8 + size == len(data), "the session's image has one layer"
    return Template(data, head.reserved_offset, head.journal_offset, head.payload_offset,
                    head.payload_size, head.chain_offset, head.chain_offset + 8, size,
                    head.build_id)


Mutation = Callable[[random.Random, Template, bytearray], Tuple[str, bytearray]]


def _flip(rng: random.Random, buf: bytearray, start: int, end: int, count: int) -> str:
    spots = []
    for _ in range(count):
        at = rng.randrange(start, end)
        buf[at] ^= 1 << rng.randrange(8)
        spots.append(at)
    return ",".join(map(str, spots))


def _fresh_id(rng: random.Random, buf: bytearray) -> str:
    """A build id no runtime was extracted for, so that the payload is read again."""
    new = "".join(rng.choice(HEX) for _ in range(16))
    buf[HEADER_OFFSET + 72:HEADER_OFFSET + 104] = new.encode().ljust(32, b"\0")
    return new


_BOUNDARIES = [0, 1, 7, 8, 4095, 4096, (1 << 31), (1 << 32) - 1, 1 << 32, (1 << 62),
               (1 << 63), (1 << 64) - 1]


def header(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    choice = rng.randrange(4)
    if choice == 0:  # a bit of the header's fields
        spots = _flip(rng, buf, HEADER_OFFSET, HEADER_OFFSET + 136, rng.randint(1, 3))
        return f"header bits {spots}", buf
    if choice == 1:  # one u64 field made a boundary or random value
        field = rng.randrange(7)
        value = rng.choice(_BOUNDARIES + [rng.getrandbits(64), len(t.data) + rng.randint(-9, 9)])
        struct.pack_into("<Q", buf, HEADER_OFFSET + 16 + 8 * field, value)
        return f"header field {field} = {value}", buf
    if choice == 2:  # the build id: a NUL inside, bytes past ASCII, a path
        raw = rng.choice([b"ab\0cd", "é".encode() * 3, b"../../x", b"a/b", b"\xff" * 32, b"",
                          b"%s" % rng.randbytes(16)])
        buf[HEADER_OFFSET + 72:HEADER_OFFSET + 104] = raw[:32].ljust(32, b"\0")
        return f"build id {raw!r}", buf
    # the version, the header size, the magic
    at = rng.choice([0, 3, 7, 8, 9, 12, 13])
    buf[HEADER_OFFSET + at] = rng.getrandbits(8)
    return f"header byte {at}", buf


def reserved(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    region = rng.choice(list(REGIONS.values()))
    start = t.reserved + region.offset
    # Most regions are a few bytes of a megabyte: damage their beginning mostly.
    span = min(region.size, rng.choice([8, 64, 4096, region.size]))
    length = rng.randint(1, min(span, 64))
    at = start + rng.randrange(0, span - length + 1)
    fill = rng.choice([rng.randbytes(length),
                       b"\xff" * length, b'{"'[:length], b"[" * length])
    buf[at:at + len(fill)] = fill
    return f"reserved {region.name} +{at - start} {fill[:16]!r}", buf


def journal(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    """A journal head: its CRC right or wrong, aimed inside the reserved space or at
    any other place of the file (which a hostile head could use to overwrite it)."""
    length = rng.choice([1, 8, 100, 4096, rng.randint(0, 1 << 21), (1 << 32) - 1])
    body = rng.randbytes(min(length, 256)).ljust(min(length, 1 << 20), b"\0")
    target = rng.choice([t.reserved, t.reserved + rng.randrange(4096), t.payload, t.layer,
                         0, rng.getrandbits(64)])
    crc = zlib.crc32(body) if rng.random() < 0.7 else rng.getrandbits(32)
    head = struct.pack("<8sQII", b"FIMJRNL1", target, length & 0xFFFFFFFF, crc)
    buf[t.journal:t.journal + len(head)] = head
    buf[t.journal + 24:t.journal + 24 + len(body)] = body
    return f"journal target={target} length={length}", buf


def payload(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    new = _fresh_id(rng, buf)
    where = rng.choice(["bits", "record", "magic"])
    if where == "magic":
        buf[t.payload + rng.randrange(8)] ^= 0x20
        spots = "magic"
    elif where == "record":  # the fixed fields of the first record: lengths, mode
        spots = _flip(rng, buf, t.payload + 8, t.payload + 18, 1)
    else:
        spots = _flip(rng, buf, t.payload, t.payload + t.payload_size, rng.randint(1, 4))
    return f"payload {where} {spots} (build id {new})", buf


def chain_size(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    value = rng.choice(_BOUNDARIES + [t.layer_size + rng.randint(-64, 64),
                                      t.layer_size - rng.randint(1, t.layer_size),
                                      rng.getrandbits(64), t.layer_size - digest.SIZE])
    struct.pack_into("<Q", buf, t.chain, value)
    return f"chain size {value}", buf


def layer_bytes(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    end = t.layer + t.layer_size
    spot = rng.choice(["anywhere", "superblock", "trailer", "anywhere"])
    start = {"anywhere": t.layer, "superblock": t.layer, "trailer": end - digest.SIZE}[spot]
    stop = {"anywhere": end, "superblock": t.layer + 96, "trailer": end}[spot]
    return f"layer {spot} {_flip(rng, buf, start, stop, rng.randint(1, 4))}", buf


def truncation(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    at = rng.choice([rng.randrange(len(buf)), HEADER_OFFSET + rng.randrange(200), t.reserved,
                     t.payload + rng.randrange(t.payload_size), t.chain + rng.randrange(16),
                     t.layer + rng.randrange(t.layer_size), len(buf) - rng.randint(1, 48)])
    return f"truncated at {at}", buf[:at]


def garbage(rng: random.Random, t: Template, buf: bytearray) -> Tuple[str, bytearray]:
    kind = rng.choice(["random", "foreign element", "zeros", "squashfs magic", "huge size"])
    size = rng.randint(1, 100000)
    if kind == "random":
        tail = rng.randbytes(min(size, 4096))
    elif kind == "foreign element":
        tail = struct.pack("<Q", size) + rng.randbytes(size)
    elif kind == "zeros":
        tail = bytes(size)
    elif kind == "squashfs magic":  # a plausible layer with nothing behind its superblock
        tail = struct.pack("<Q", size) + b"hsqs" + rng.randbytes(size - 4)
    else:
        tail = struct.pack("<Q", rng.getrandbits(64))
    return f"appended {kind} ({len(tail)} bytes)", buf + tail


MUTATIONS: List[Mutation] = [header, reserved, journal, payload, chain_size, layer_bytes,
                             truncation, garbage]


def write_sparse(path: Path, data: bytes) -> None:
    """The mutant, its zero blocks left as holes (the reserved space is mostly zeros)."""
    block = 1 << 16
    zero = bytes(block)
    with open(path, "wb") as f:
        for at in range(0, len(data), block):
            chunk = data[at:at + block]
            if chunk == zero[:len(chunk)]:
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                f.write(chunk)
        f.truncate(len(data))


def one_line_or_warnings(r_code: int, out: str, err: str) -> Optional[str]:
    """Why the outcome breaks the contract, None when it keeps it."""
    if "Traceback" in err or "Internal error" in err:
        return "traceback or internal error"
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("E::")]
    others = [ln for ln in lines if not ln.startswith(("E::", "W::"))]
    if others:
        return f"lines that are neither E:: nor W:: ({others[:2]})"
    if r_code == 0:
        if errors:
            return "an E:: line on success"
        if out != EXPECTED:
            return f"ran, but printed {out[:80]!r}"
        return None
    if len(errors) != 1:
        return f"exit {r_code} with {len(errors)} E:: lines"
    return None


@dataclass(frozen=True)
class Outcome:
    index: int
    what: str
    code: int
    out: str
    err: str
    problem: Optional[str]
    seconds: float


def run_mutant(runner: Runner, base: Path, index: int, what: str, data: bytes,
               program: Tuple[str, ...] = ("cat", "/opt/base/keep"),
               timeout: float = TIMEOUT) -> Outcome:
    place = base / f"m{index:05d}"
    place.mkdir()
    image = place / "app.flatimage"
    write_sparse(image, data)
    image.chmod(0o755)
    if runner.user is not None:
        os.chown(place, runner.uid, -1)
        os.chown(image, runner.uid, -1)
    env = {**os.environ, "FIM_KEEP": "0"}
    env.pop("FIM_DEBUG", None)
    env.pop("FIM_OVERLAY", None)
    start = time.monotonic()
    proc = runner.popen([str(image), "fim-exec", *program], env=env,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        problem = one_line_or_warnings(proc.returncode, out, err)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code, problem = -9, f"no answer within {timeout:.0f} s"
    left = _gone(place)
    if left and problem is None:
        problem = f"left behind: {left[:3]}"
    subprocess.run(["rm", "-rf", str(place)], check=False)
    return Outcome(index, what, code, out, err, problem, time.monotonic() - start)


def _gone(place: Path) -> List[str]:
    """What of the mutant is still there once its launcher ended: its daemons end with
    its namespaces, give them a moment; what is left is ended here and reported."""
    deadline = time.monotonic() + 5
    while _processes_naming(str(place)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return reap(place)


def _processes_naming(path: str) -> List[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def mutants(t: Template, seed: int, count: int) -> Iterator[Tuple[int, str, bytes]]:
    rng = random.Random(seed)
    for index in range(count):
        mutation = MUTATIONS[index % len(MUTATIONS)]
        what, data = mutation(rng, t, bytearray(t.data))
        yield index, f"{mutation.__name__}: {what}", bytes(data)


def _app_dirs(runner: Runner) -> List[Path]:
    return [Path(g) / "app" for g in ("/tmp/fim", f"/tmp/fim-{runner.uid}")]


def _ids_in(data: bytes) -> Set[str]:
    raw = data[HEADER_OFFSET + 72:HEADER_OFFSET + 104].rstrip(b"\0")
    return {raw.decode()} if raw and not raw.translate(None, HEX.encode()) else set()


def fuse_mounts_under(prefixes: List[str]) -> List[str]:
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    found = []
    for line in lines:
        fields = line.split()
        kind = fields[fields.index("-") + 1]
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if kind.startswith("fuse") and any(point.startswith(p) for p in prefixes):
            found.append(f"{kind} {point}")
    return found


def test_damaged_images_never_reach_a_traceback(built_image: Path, runner: Runner,
                                                workdir: Path) -> None:
    t = template(built_image)
    seed = SEED + (0 if runner.user is None else 1)
    before = {d: set(os.listdir(d)) if d.is_dir() else set() for d in _app_dirs(runner)}
    made: Set[str] = set()
    outcomes: List[Outcome] = []
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = []
            for index, what, data in mutants(t, seed, COUNT):
                made |= _ids_in(data) - {t.build_id}
                futures.append(pool.submit(run_mutant, runner, workdir, index, what, data))
            outcomes = [f.result() for f in futures]
    finally:
        # Runtimes extracted for the mutants' fresh build ids (never one that was there).
        for d, names in before.items():
            for name in made - names:
                shutil.rmtree(d / name, ignore_errors=True)
    assert not fuse_mounts_under([str(workdir)] + [str(d / n) for d in before for n in made])
    assert not _processes_naming(str(workdir))
    bad = [o for o in outcomes if o.problem is not None]
    ran = sum(1 for o in outcomes if o.code == 0)
    slowest = max(outcomes, key=lambda o: o.seconds)
    summary = (f"{len(outcomes)} mutants (seed {seed}): {ran} ran, {len(outcomes) - ran} "
               f"refused, {len(bad)} broke the contract; slowest {slowest.seconds:.1f} s "
               f"({slowest.what})")
    print(summary)
    detail = "\n".join(f"#{o.index} {o.what}: {o.problem}; exit {o.code}; stderr "
                       f"{o.err.strip()[:300]!r}" for o in bad[:15])
    assert not bad, f"{summary}\n{detail}"
    # The campaign must have exercised both sides: images that run and images refused.
    assert ran and ran < len(outcomes)


def test_a_mutant_that_hangs_is_killed_and_counted(built_image: Path, runner: Runner,
                                                   workdir: Path) -> None:
    """The harness itself: a run past its time limit is a failure, and nothing of it is
    left afterwards (the oracle could not fail otherwise)."""
    outcome = run_mutant(runner, workdir, 0, "a program that never ends",
                         template(built_image).data, program=("sleep", "60"), timeout=2)
    assert outcome.problem is not None and outcome.problem.startswith("no answer"), outcome
    assert not _processes_naming(str(workdir))

#!/usr/bin/env python3
"""Cost of fim's layer creation path against mksquashfs run directly.

For each FIM_COMPRESSION_LEVEL asked for, the layer is made (a) the way the
runtime makes it, `fim.runtime.layers.build.create(...)`, and (b) by running
mksquashfs directly with the identical argv from `squashfs.create_argv()`.
The two are run alternately (a b, then b a, ...) in one process so that
machine noise hits them alike; the report gives medians, their ratio, the
output sizes and compression ratios, and `tar | zstd -19` for comparison.

(a) includes what the runtime does beyond mksquashfs: the tool look-up, the
spawn with its log redirection and the fsync of the output. The fsync is
timed separately after each (b) run (outside its time) to show its share.

Without --tree, a deterministic tree is generated (default 50,000 files,
about 500 MB): files of varied sizes whose contents mix repeated text-like
chunks, random bytes and some whole-file duplicates.

    .venv/bin/python bench/layers.py [--tree DIR] [--levels 1,7,9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Tuple

TEXT_EXTS = ("txt", "py", "json", "md", "h", "conf", "html")
BINARY_EXTS = ("so", "bin", "dat", "o")
RANDOM_EXTS = ("gz", "png", "zst", "jpg")


# ---------------------------------------------------------------- tree generation

def _words(rng: random.Random, count: int) -> List[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    common = ["the", "and", "def", "return", "self", "import", "if", "else", "for", "in",
              "None", "True", "int", "str", "value", "name", "data", "0", "1", "=", "==",
              "(", ")", "{", "}", ":", ",", "#", "//", "->"]
    made = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10)))
            for _ in range(count)]
    return common * 20 + made


def _text_chunk(rng: random.Random, words: List[str], size: int) -> bytes:
    out: List[str] = []
    length = 0
    while length < size:
        line = " " * (4 * rng.randint(0, 3)) + " ".join(
            rng.choice(words) for _ in range(rng.randint(3, 14)))
        out.append(line)
        length += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:size]


def _sizes(rng: random.Random, files: int, total: int) -> List[int]:
    """Log-normal sizes (many small files, a few large ones) scaled to `total` bytes."""
    raw = [rng.lognormvariate(8.0, 1.7) for _ in range(files)]
    scale = total / sum(raw)
    cap = max(total // 20, 1)
    return [min(int(r * scale), cap) for r in raw]


def generate(root: str, files: int, total: int, seed: int) -> None:
    rng = random.Random(seed)
    words = _words(rng, 3000)
    # Chunks come in families (like the files of one package); each directory mostly
    # draws from two families, so that redundancy is partly local, partly tree-wide.
    families, per_family = 100, 6
    pool = [_text_chunk(rng, words, rng.randint(512, 8192))
            for _ in range(families * per_family)]
    sizes = _sizes(rng, files, total)
    per_dir = 50
    written: List[Tuple[str, str]] = []  # (path, ext) of files that may be duplicated
    for i, size in enumerate(sizes):
        directory = os.path.join(root, f"d{i // (per_dir * 20):03d}",
                                 f"s{(i // per_dir) % 20:02d}")
        if i % per_dir == 0:
            os.makedirs(directory, exist_ok=True)
            local = rng.sample(range(families), 2)
        kind = rng.random()
        stem = f"{rng.choice(words).strip('(){}:,#=/->') or 'f'}_{i}"
        if kind < 0.05 and written:
            src, ext = rng.choice(written)
            shutil.copyfile(src, os.path.join(directory, f"{stem}.{ext}"))
            continue
        if kind < 0.60:
            ext, p_text = rng.choice(TEXT_EXTS), 0.97
        elif kind < 0.92:
            ext, p_text = rng.choice(BINARY_EXTS), 0.7
        else:  # already compressed data
            ext, p_text = rng.choice(RANDOM_EXTS), 0.0
        parts: List[bytes] = []
        length = 0
        while length < size:
            if rng.random() < p_text:
                family = rng.choice(local) if rng.random() < 0.8 else rng.randrange(families)
                chunk = pool[family * per_family + rng.randrange(per_family)]
                if rng.random() < 0.3:
                    cut = rng.randrange(len(chunk))
                    chunk = chunk[:cut] + rng.choice(words).encode() + chunk[cut:]
            else:
                chunk = rng.randbytes(rng.randint(64, 4096))
            parts.append(chunk)
            length += len(chunk)
        path = os.path.join(directory, f"{stem}.{ext}")
        with open(path, "wb") as f:
            f.write(b"".join(parts)[:size])
        if len(written) < 2000:
            written.append((path, ext))


def tree_stats(root: str) -> Tuple[int, int]:
    """(regular files, bytes in them), hard links counted once."""
    seen = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                seen.add((st.st_dev, st.st_ino, st.st_size))
    return len(seen), sum(size for _, _, size in seen)


def warm(root: str) -> None:
    """Read the whole tree once so that every timed run starts from the page cache."""
    subprocess.run(f"tar -C '{root}' -cf - . | cat > /dev/null", shell=True, check=True)


# ---------------------------------------------------------------- measurements

def run_fim(source: str, output: str, level: int, runtime_dir: str, log: str) -> float:
    from fim.runtime.layers import build

    start = time.perf_counter()
    build.create(source, output, level, runtime_dir, os.environ, log)
    return time.perf_counter() - start


def run_direct(argv: List[str], log: str) -> float:
    with open(log, "wb") as out:
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, env=dict(os.environ))
        return time.perf_counter() - start


def timed_fsync(path: str) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def tar_zstd(source: str, level: int = 19) -> Tuple[int, float]:
    start = time.perf_counter()
    tar = subprocess.Popen(["tar", "-C", source, "-cf", "-", "."], stdout=subprocess.PIPE)
    zstd = subprocess.Popen(["zstd", f"-{level}", "-T0", "-q", "-c"], stdin=tar.stdout,
                            stdout=subprocess.PIPE)
    assert tar.stdout is not None and zstd.stdout is not None
    tar.stdout.close()
    size = 0
    while True:
        block = zstd.stdout.read(1 << 20)
        if not block:
            break
        size += len(block)
    if zstd.wait() != 0 or tar.wait() != 0:
        raise RuntimeError("tar | zstd failed")
    return size, time.perf_counter() - start


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Result(NamedTuple):
    level: int
    argv: List[str]
    fim: float  # median seconds of build.create
    direct: float  # median seconds of mksquashfs run directly
    fsync: float  # median seconds of an fsync of the direct output
    size_fim: int
    size_direct: int


def measure(source: str, work: str, level: int, repeat: int) -> Result:
    from fim.runtime import tools
    from fim.runtime.layers import squashfs

    runtime_dir = os.path.join(work, "runtime")  # no tools/bin: mksquashfs comes from PATH
    os.makedirs(runtime_dir, exist_ok=True)
    tool = tools.require(runtime_dir, squashfs.CREATE_TOOL, os.environ, "to create layers")
    out_a = os.path.join(work, f"fim-{level}.layer")
    out_b = os.path.join(work, f"direct-{level}.layer")
    argv = squashfs.create_argv(tool, source, out_b, level)
    fim_s: List[float] = []
    direct_s: List[float] = []
    fsync_s: List[float] = []
    for i in range(repeat):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for side in order:
            if side == "a":
                unlink(out_a)
                fim_s.append(run_fim(source, out_a, level, runtime_dir,
                                     os.path.join(work, "fim.log")))
            else:
                unlink(out_b)
                direct_s.append(run_direct(argv, os.path.join(work, "direct.log")))
                fsync_s.append(timed_fsync(out_b))
        print(f"  level {level} run {i + 1}/{repeat}: fim {fim_s[-1]:.2f} s, "
              f"direct {direct_s[-1]:.2f} s", file=sys.stderr, flush=True)
    result = Result(level, argv, statistics.median(fim_s), statistics.median(direct_s),
                    statistics.median(fsync_s), os.path.getsize(out_a), os.path.getsize(out_b))
    unlink(out_a)
    unlink(out_b)
    return result


# ---------------------------------------------------------------- report

def zstd_of(argv: List[str]) -> str:
    """The zstd level in a mksquashfs argv (the default when there is none)."""
    if "-Xcompression-level" in argv:
        return argv[argv.index("-Xcompression-level") + 1]
    return "default"


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def report(results: List[Result], tar: Tuple[int, float], input_bytes: int,
           repeat: int) -> str:
    lines = [
        f"Medians of {repeat} alternated runs; sizes in MB (10^6 bytes); "
        f"ratio = input bytes / output bytes.",
        "",
        "| FIM_COMPRESSION_LEVEL | zstd | (a) fim build.create s | (b) mksquashfs s "
        "| (a)/(b) | fsync s | size MB | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        same = "" if r.size_fim == r.size_direct else f" (direct {mb(r.size_direct)})"
        lines.append(
            f"| {r.level} | {zstd_of(r.argv)} | {r.fim:.2f} | {r.direct:.2f} "
            f"| {r.fim / r.direct:.3f} | {r.fsync:.3f} | {mb(r.size_fim)}{same} "
            f"| {input_bytes / r.size_fim:.2f} |")
    if tar[0]:
        lines.append(f"| tar \\| zstd -19 -T0 | 19 | | {tar[1]:.2f} (tar \\| zstd) | | "
                     f"| {mb(tar[0])} | {input_bytes / tar[0]:.2f} |")
    lines.append("")
    for r in results:
        lines.append(f"argv (level {r.level}): `{' '.join(r.argv)}`")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="directory to pack (default: generate one)")
    parser.add_argument("--files", type=int, default=50_000, help="files in a generated tree")
    parser.add_argument("--size-mb", type=float, default=500.0,
                        help="bytes in a generated tree, in MB")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated tree")
    parser.add_argument("--levels", default="1,7,9", help="FIM_COMPRESSION_LEVELs, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side per level")
    parser.add_argument("--no-tar", action="store_true", help="skip tar | zstd -19")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if any(not 0 <= lv <= 9 for lv in levels):
        parser.error("levels are 0-9")

    work = tempfile.mkdtemp(prefix="fim-bench-layers-")
    try:
        if args.tree:
            source = os.path.abspath(args.tree)
        else:
            source = os.path.join(work, "tree")
            start = time.perf_counter()
            generate(source, args.files, int(args.size_mb * 1e6), args.seed)
            print(f"generated {source} in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)
        count, input_bytes = tree_stats(source)
        warm(source)
        load = os.getloadavg()
        results = [measure(source, work, lv, args.repeat) for lv in levels]
        tar = (0, 0.0) if args.no_tar else tar_zstd(source)
        kind = "given" if args.tree else f"generated (seed {args.seed})"
        print(f"Tree: {kind}, {count} files, {mb(input_bytes)} MB in regular files. "
              f"Load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
              f"({os.cpu_count()} CPUs).")
        print(report(results, tar, input_bytes, args.repeat))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

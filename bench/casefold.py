#!/usr/bin/env python3
"""Cost of the case-insensitive view: casefold on against off, on UNIONFS and OVERLAYFS.

Workloads inside `fim-exec` on a busybox image (layer 0 holds the data):
  touch  1000 new files in /var/tmp (on the overlay)
  read   a 200 MB file from layer 0
  stat   stat of 20,000 small files from layer 0
Two copies of one image, one with `fim-casefold on`, run alternately in one run.

    .venv/bin/python bench/casefold.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from overlays import make_tree  # noqa: E402
from rawtools import timed  # noqa: E402

WORKLOADS = {
    "touch": "i=0; while [ $i -lt 1000 ]; do touch /var/tmp/test-$i; i=$((i+1)); done",
    "read": "cat /opt/big > /dev/null",
    "stat": "find /opt/small -type f | xargs stat -c %s > /dev/null",
}
BACKENDS = ["unionfs", "overlayfs"]



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    try:
        fim = [sys.executable, "-m", "fim"]
        subprocess.run(fim + ["rootfs", "busybox", str(base / "rootfs")], check=True)
        make_tree(base / "rootfs")
        off = base / "off" / "app.flatimage"
        on = base / "on" / "app.flatimage"
        off.parent.mkdir()
        on.parent.mkdir()
        subprocess.run(fim + ["build", str(base / "rootfs"), str(off)], check=True)
        shutil.rmtree(base / "rootfs")
        shutil.copy2(off, on)
        subprocess.run([str(on), "fim-casefold", "on"], check=True)
        images = {"off": off, "on": on}
        times: Dict[Tuple[str, str, str], List[float]] = {}
        for _ in range(args.runs):
            for name, work in WORKLOADS.items():
                for backend in BACKENDS:
                    for state, image in images.items():
                        shutil.rmtree(image.parent / f".{image.name}.data", ignore_errors=True)
                        env = dict(os.environ, FIM_OVERLAY=backend, FIM_KEEP="0")
                        t = timed([str(image), "fim-exec", "sh", "-c", work], env)
                        times.setdefault((name, backend, state), []).append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"casefold, {args.runs} alternating runs (median seconds)\n")
        print("| workload | overlay | casefold off | casefold on | on / off |")
        print("|---|---|---|---|---|")
        for name in WORKLOADS:
            for backend in BACKENDS:
                a, b = med[(name, backend, "off")], med[(name, backend, "on")]
                print(f"| {name} | {backend} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

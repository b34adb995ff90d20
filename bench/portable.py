#!/usr/bin/env python3
"""Cost of portability: a Debian image carrying its tools against the same image
using the host's tools, the first-run extraction, and the file size.

    .venv/bin/python bench/portable.py [--rootfs DIR] [--runs 30]

Without --rootfs it makes a Debian bookworm minbase with `fim rootfs debian`.
Both images embed bubblewrap 0.11 (the host's may be too old for the overlay);
"host tools" takes squashfuse, fuse-overlayfs, unionfs and mksquashfs from PATH.
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
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rawtools import timed  # noqa: E402

# Every run mounts its layers (no keeper): the cost of the tools' copies is the point.
COLD = dict(os.environ, FIM_KEEP="0")

from fim.runtime.image import header  # noqa: E402


def runtime_dir(image: Path) -> Path:
    uid = os.getuid()
    gdir = "/tmp/fim" if os.stat("/tmp/fim").st_uid == uid else f"/tmp/fim-{uid}"
    return Path(gdir) / "app" / header.read(str(image)).build_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    fim = [sys.executable, "-m", "fim"]
    try:
        rootfs = args.rootfs
        if rootfs is None:
            rootfs = base / "rootfs"
            subprocess.run(fim + ["rootfs", "debian", str(rootfs)], check=True)
        images: Dict[str, Path] = {}
        for embed, label in (("all", "embedded tools"), ("bwrap", "host tools")):
            images[label] = base / f"{embed}.flatimage"
            subprocess.run(fim + ["build", "--embed", embed, str(rootfs), str(images[label])],
                           check=True)
        for image in images.values():
            subprocess.run([str(image), "fim-exec", "true"], check=True)
        times: Dict[str, List[float]] = {label: [] for label in images}
        for _ in range(args.runs):
            for label, image in images.items():
                times[label].append(timed([str(image), "fim-exec", "true"], COLD))
        first: Dict[str, List[float]] = {label: [] for label in images}
        for _ in range(max(5, args.runs // 5)):
            for label, image in images.items():
                shutil.rmtree(runtime_dir(image), ignore_errors=True)
                first[label].append(timed([str(image), "fim-exec", "true"], COLD))
        tar = base / "rootfs.tar.zst"
        subprocess.run(f"tar -C {rootfs} -cf - . | zstd -q -19 -T0 -o {tar}", shell=True,
                       check=True)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        cold = {k: statistics.median(v) * 1000 for k, v in first.items()}
        print(f"start-up of `fim-exec true`, {args.runs} alternating runs (median ms)\n")
        print("| image | warm | first run (extraction) |")
        print("|---|---|---|")
        for label in images:
            print(f"| {label} | {med[label]:.1f} | {cold[label]:.1f} |")
        print(f"\nratio embedded / host tools (warm): "
              f"{med['embedded tools'] / med['host tools']:.2f}x\n")
        heads = {k: header.read(str(v)) for k, v in images.items()}
        print("| file | bytes |")
        print("|---|---|")
        for label, image in images.items():
            print(f"| image, {label} | {image.stat().st_size:,} |")
            print(f"| runtime payload, {label} | {heads[label].payload_size:,} |")
        print(f"| rootfs as tar.zst (zstd -19) | {tar.stat().st_size:,} |")
        overhead = heads["embedded tools"].payload_size - heads["host tools"].payload_size
        print(f"\nembedded tools add {overhead:,} bytes to the image")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

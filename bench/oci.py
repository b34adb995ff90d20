#!/usr/bin/env python3
"""fim build from a multi-layer Debian-based OCI image, against `umoci unpack` followed
by mksquashfs of the unpacked root (the same mksquashfs options fim's layers use), and
the layered image's size against the --squash one.

The image: a Debian bookworm minbase root (`fim rootfs debian`, or --rootfs DIR)
imported with podman, then three layers built on it (a tree of text and binary files,
a copy of /usr/share with deletions and a directory made again, hard links to lower
files), saved as an OCI layout with skopeo. Root only (podman, umoci as root).

Runs alternate (fim, raw, fim, raw...) so that the machine's noise hits both alike;
the report gives medians over --runs.

    .venv/bin/python bench/oci.py --runs 3 [--rootfs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fim.runtime.layers import DEFAULT_LEVEL, squashfs  # noqa: E402

CONTAINERFILE = """FROM {base}
RUN mkdir -p /opt/data && cd /opt/data && for i in $(seq 1 400); do \\
      head -c 20000 /dev/urandom > bin$i; seq 1 $((i * 50)) > text$i; done
RUN cp -a /usr/share /opt/share && rm -rf /opt/share/doc /usr/share/locale && \\
    mkdir /usr/share/locale && echo C > /usr/share/locale/README && \\
    for f in /usr/bin/*; do [ -f "$f" ] && ln "$f" "/opt/$(basename $f).link" || true; done
RUN rm -rf /opt/data/bin1* && sed -i s/1/one/ /opt/data/text2
"""


def run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL)


def timed(*argv: str) -> float:
    start = time.monotonic()
    run(*argv)
    return time.monotonic() - start


def fim(*args: str) -> List[str]:
    return [sys.executable, "-m", "fim", *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rootfs", help="a Debian root (default: made with fim rootfs debian)")
    args = parser.parse_args()
    if os.getuid() != 0 or not all(shutil.which(t) for t in ("podman", "skopeo", "umoci")):
        print("needs root and podman, skopeo, umoci (scripts/install.sh test)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="fim-bench-oci-"))
    tag = f"localhost/fim-bench-oci-{os.getpid()}"
    try:
        root = Path(args.rootfs) if args.rootfs else work / "root"
        if not args.rootfs:
            run(*fim("rootfs", "debian", str(root)))
        run("tar", "-C", str(root), "-cf", str(work / "root.tar"), ".")
        run("podman", "import", str(work / "root.tar"), f"{tag}-base:1")
        (work / "ctx").mkdir()
        (work / "ctx/Containerfile").write_text(CONTAINERFILE.format(base=f"{tag}-base:1"))
        run("podman", "build", "-q", "--isolation=chroot", "-t", f"{tag}:1", str(work / "ctx"))
        run("skopeo", "copy", "-q", f"containers-storage:{tag}:1", f"oci:{work / 'layout'}:b")
        layers = len(json.loads(subprocess.run(
            ["skopeo", "inspect", f"oci:{work / 'layout'}:b"], check=True,
            capture_output=True, text=True).stdout)["Layers"])
        mksquashfs = shutil.which("mksquashfs") or "mksquashfs"
        fim_times, raw_times, squash_times = [], [], []
        for _ in range(args.runs):
            for out in ("fim.flatimage", "squash.flatimage", "raw.sqfs", "bundle"):
                subprocess.run(["rm", "-rf", str(work / out)], check=True)
            fim_times.append(timed(*fim("build", f"oci:{work / 'layout'}:b",
                                        str(work / "fim.flatimage"), "--embed", "none",
                                        "--python", "none")))
            start = time.monotonic()
            run("umoci", "unpack", "--image", f"{work / 'layout'}:b", str(work / "bundle"))
            run(*squashfs.create_argv([mksquashfs], str(work / "bundle/rootfs"),
                                      str(work / "raw.sqfs"), DEFAULT_LEVEL))
            raw_times.append(time.monotonic() - start)
            squash_times.append(timed(*fim("build", f"oci:{work / 'layout'}:b",
                                           str(work / "squash.flatimage"), "--squash",
                                           "--embed", "none", "--python", "none")))
        empty = work / "empty"
        empty.mkdir()
        run(*fim("build", str(empty), str(work / "empty.flatimage"), "--embed", "none",
                 "--python", "none"))
        base = (work / "empty.flatimage").stat().st_size
        sizes = {name: (work / name).stat().st_size - base
                 for name in ("fim.flatimage", "squash.flatimage")}
        unpacked = subprocess.run(["du", "-sb", str(work / "bundle/rootfs")], check=True,
                                  capture_output=True, text=True).stdout.split()[0]
        f, r, s = (statistics.median(x) for x in (fim_times, raw_times, squash_times))
        print(f"image: {layers} OCI layers, {int(unpacked) / 1e6:.1f} MB unpacked; "
              f"{args.runs} runs, medians, seconds")
        print("| build | seconds | / umoci + mksquashfs |")
        print("|---|---|---|")
        print(f"| fim build (one layer per OCI layer) | {f:.2f} | {f / r:.2f} |")
        print(f"| fim build --squash | {s:.2f} | {s / r:.2f} |")
        print(f"| umoci unpack + mksquashfs | {r:.2f} | 1.00 |")
        print()
        print("| layers in the image | MB | / squashed |")
        print("|---|---|---|")
        print(f"| one per OCI layer | {sizes['fim.flatimage'] / 1e6:.1f} | "
              f"{sizes['fim.flatimage'] / sizes['squash.flatimage']:.2f} |")
        print(f"| --squash | {sizes['squash.flatimage'] / 1e6:.1f} | 1.00 |")
        print(f"| (umoci + mksquashfs: {(work / 'raw.sqfs').stat().st_size / 1e6:.1f} MB) | | |")
        return 0
    finally:
        for image in (f"{tag}:1", f"{tag}-base:1"):
            subprocess.run(["podman", "rmi", "-f", image], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())

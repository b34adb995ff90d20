#!/usr/bin/env python3
"""Start-up cost of `./app.flatimage fim-exec true` against the floor.

The floor is a hand-written shell script that does what the runtime does with
the same tools and nothing else: private namespaces (`unshare`), one
`squashfuse_ll -o offset=N` mount of layer 0 straight from the image, the same
bubblewrap command line (same binary, overlay, binds, identity), then the same
clean-up. "fim, kept mounts" is the default launch, which reuses the mounts of
the image's keeper (FIM_KEEP). All are run alternately in one process so that machine noise hits
them alike; the report gives medians and their ratio.

    .venv/bin/python bench/startup.py [--runs 40] [--user NAME]
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
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawtools  # noqa: E402
from rawtools import timed  # noqa: E402

from fim.runtime.image import header  # noqa: E402


def floor_script(image: Path, work: Path, runtime_dir: str, uid: int, gid: int,
                 user: str) -> Path:
    return rawtools.script(image, work, "bwrap", rawtools.commands(runtime_dir),
                           rawtools.identity(uid, gid, user), ["true"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--user", help="run both sides as this unprivileged user (needs root)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    os.chmod(base, 0o755)
    try:
        fim = [sys.executable, "-m", "fim"]
        subprocess.run(fim + ["rootfs", "busybox", str(base / "rootfs")], check=True)
        image = base / "app.flatimage"
        subprocess.run(fim + ["build", str(base / "rootfs"), str(image)], check=True)
        # The kept side runs its own copy (own data dir, own keeper): a launch with
        # FIM_KEEP=0 retires the idle keeper of its image, so the cold side would
        # otherwise make every kept launch start a keeper afresh.
        kept = base / "kept" / "app.flatimage"
        kept.parent.mkdir()
        shutil.copy2(image, kept)
        uid, gid, user = os.getuid(), os.getgid(), "root"
        wrap: List[str] = []
        if args.user:
            import pwd

            entry = pwd.getpwnam(args.user)
            uid, gid, user = entry.pw_uid, entry.pw_gid, args.user
            wrap = ["runuser", "-u", args.user, "--"]
            subprocess.run(["chown", "-R", args.user, str(base)], check=True)
        # One run extracts the runtime; the floor then uses the same bwrap binary.
        subprocess.run(wrap + [str(image), "fim-exec", "true"], check=True)
        gdir = "/tmp/fim" if os.stat("/tmp/fim").st_uid == uid else f"/tmp/fim-{uid}"
        build_id = header.read(str(image)).build_id
        work = base / "floor"
        script = floor_script(image, work, f"{gdir}/app/{build_id}/runtime", uid, gid, user)
        if args.user:
            subprocess.run(["chown", "-R", args.user, str(work)], check=True)
        python = [sys.executable if not os.path.exists("/usr/bin/python3") else
                  "/usr/bin/python3", "-I", "-S", "-c", "pass"]
        sides = {
            # Cold, as the floor: every layer mounted by this launch.
            "fim": wrap + ["env", "FIM_KEEP=0", str(image), "fim-exec", "true"],
            # Relaunched: the keeper's mounts reused (docs/appstart.md).
            "fim, kept mounts": wrap + [str(kept), "fim-exec", "true"],
            "floor": wrap + [str(script)],
            "python -I -S -c pass": wrap + python,
        }
        for argv in sides.values():  # warm caches
            for _ in range(3):
                timed(argv)
        times: dict = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, argv in sides.items():
                times[name].append(timed(argv))
        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        who = args.user or ("root" if os.getuid() == 0 else "current user")
        print(f"start-up, {args.runs} alternating runs as {who} (median ms)")
        print("| command | median ms |")
        print("|---|---|")
        for name, value in med.items():
            print(f"| {name} | {value:.1f} |")
        print(f"ratio fim / floor: {med['fim'] / med['floor']:.2f}x")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

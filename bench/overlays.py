#!/usr/bin/env python3
"""The seed's overlay benchmark, and reads, for the three backends, with fim and by hand.

Workloads, each inside `fim-exec` on a busybox image:
  touch  1000 new files in /var/tmp (on the overlay: /tmp is a tmpfs in the sandbox)
  big    read a 200 MB file from layer 0
  small  read 20,000 small files from layer 0
Each runs with FIM_OVERLAY=bwrap|overlayfs|unionfs and with the raw tools (squashfuse_ll +
the overlay tool + the same bubblewrap call, no fim), all alternating in one run.

    .venv/bin/python bench/overlays.py [--runs 5] [--user NAME]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawtools  # noqa: E402
from rawtools import timed  # noqa: E402

from fim.runtime.image import header  # noqa: E402

BACKENDS = ["bwrap", "overlayfs", "unionfs"]
WORKLOADS = {
    "touch": "i=0; while [ $i -lt 1000 ]; do touch /var/tmp/test-$i; i=$((i+1)); done",
    "big": "cat /opt/big > /dev/null",
    "small": "find /opt/small -type f | xargs cat > /dev/null",
}
SEED_EXPECTATION = {"bwrap": 1.0, "overlayfs": 1.5, "unionfs": 2.5}


def make_tree(rootfs: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    words = [bytes(rng.getrandbits(8) for _ in range(rng.randint(3, 12))) for _ in range(4000)]
    text = b" ".join(rng.choice(words) for _ in range(400000))  # ~3 MB of word salad
    opt = rootfs / "opt"
    with open(opt / "big", "wb") as f:
        # Half redundant text, half noise: roughly what binaries and data files give.
        for _ in range(200):
            start = rng.randrange(len(text) - (1 << 19))
            f.write(text[start:start + (1 << 19)])
            f.write(rng.randbytes(1 << 19))
    for d in range(100):
        sub = opt / "small" / f"d{d:02}"
        sub.mkdir(parents=True)
        for i in range(200):
            size = rng.randint(200, 4000)
            start = rng.randrange(len(text) - size)
            (sub / f"f{i:03}").write_bytes(text[start:start + size])



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user", help="run as this unprivileged user (needs root)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    os.chmod(base, 0o755)
    try:
        fim = [sys.executable, "-m", "fim"]
        subprocess.run(fim + ["rootfs", "busybox", str(base / "rootfs")], check=True)
        make_tree(base / "rootfs")
        image = base / "app.flatimage"
        subprocess.run(fim + ["build", str(base / "rootfs"), str(image)], check=True)
        subprocess.run(["rm", "-rf", str(base / "rootfs")], check=True)
        uid, gid, user, wrap = os.getuid(), os.getgid(), "root", []
        if args.user:
            import pwd

            entry = pwd.getpwnam(args.user)
            uid, gid, user = entry.pw_uid, entry.pw_gid, args.user
            wrap = ["runuser", "-u", args.user, "--"]
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(base)], check=True)
        env = dict(os.environ, FIM_KEEP="0")  # every run mounts, as the raw tools do
        subprocess.run(wrap + [str(image), "fim-exec", "true"], check=True, env=env)
        gdir = "/tmp/fim" if os.stat("/tmp/fim").st_uid == uid else f"/tmp/fim-{uid}"
        cmds = rawtools.commands(f"{gdir}/app/{header.read(str(image)).build_id}/runtime")
        ident = rawtools.identity(uid, gid, user)
        raw: Dict[Tuple[str, str], Path] = {}
        for backend in BACKENDS:
            for name, work in WORKLOADS.items():
                d = base / f"raw-{backend}-{name}"
                raw[(backend, name)] = rawtools.script(image, d, backend, cmds, ident,
                                                       ["sh", "-c", work])
        if args.user:
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(base)], check=True)

        def reset() -> None:
            subprocess.run(["rm", "-rf", str(base / ".app.flatimage.data")], check=True)
            for (_b, _n), script in raw.items():
                upper = script.parent / "upper"
                subprocess.run(["sh", "-c", f"rm -rf {upper}/* {upper}/.[!.]*"], check=True)

        times: Dict[Tuple[str, str, str], List[float]] = {}
        for _ in range(args.runs):
            for name, work in WORKLOADS.items():
                for backend in BACKENDS:
                    reset()
                    fenv = dict(env, FIM_OVERLAY=backend)
                    t = timed(wrap + [str(image), "fim-exec", "sh", "-c", work], fenv)
                    times.setdefault(("fim", backend, name), []).append(t)
                    reset()
                    t = timed(wrap + [str(raw[(backend, name)])], env)
                    times.setdefault(("raw", backend, name), []).append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        who = args.user or ("root" if os.getuid() == 0 else "current user")
        print(f"overlays, {args.runs} alternating runs as {who} (median seconds)\n")
        print("| workload | backend | fim | raw tools | fim / raw | fim / fim BWRAP |"
              " raw / raw BWRAP |")
        print("|---|---|---|---|---|---|---|")
        for name in WORKLOADS:
            for backend in BACKENDS:
                f, r = med[("fim", backend, name)], med[("raw", backend, name)]
                fb, rb = med[("fim", "bwrap", name)], med[("raw", "bwrap", name)]
                print(f"| {name} | {backend} | {f:.3f} | {r:.3f} | {f / r:.2f} | {f / fb:.2f} |"
                      f" {r / rb:.2f} |")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

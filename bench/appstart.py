#!/usr/bin/env python3
"""How fast real programs start from an image, against the same root as a plain directory.

An image is built from a Debian root directory (python3 in it) with `fim build`,
then each program runs, alternately in one run:

  plain      the root directory itself as the lower dir of the same bubblewrap
             overlay call fim makes for BWRAP (same binary, binds, identity)
  <backend>  `fim-exec` with FIM_OVERLAY=<backend>, cold: FIM_KEEP=0, so fresh
             FUSE daemons mount every layer (the image file may be in the page cache)
  <backend>+ the same, relaunched: a launch seconds after another one, so the
             keeper's mounts (and their caches) are reused

Programs (`--program NAME=COMMAND` adds one):
  python   python3 -c 'import json, email, http.client, asyncio'
  pydoc    pydoc3 -k zipfile   (reads about 750 small .py/.pyc files)
  dpkg     dpkg -l             (opens six files)

    .venv/bin/python bench/appstart.py --rootfs DIR [--runs 5] [--user NAME]
        [--backends bwrap,overlayfs,unionfs] [--casefold] [--image FILE]

The report gives each side's median and the median of its per-round ratio to
the plain directory, then the targets of docs/appstart.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawtools  # noqa: E402

from fim.runtime import sandbox  # noqa: E402
from fim.runtime.image import header  # noqa: E402
from fim.runtime.overlays import bwrap as native_overlay  # noqa: E402

PROGRAMS = {
    "python": ["python3", "-c", "import json, email, http.client, asyncio"],
    "pydoc": ["pydoc3", "-k", "zipfile"],
    "dpkg": ["dpkg", "-l"],
}
BACKENDS = ("bwrap", "overlayfs", "unionfs")
# Seconds between the launch that leaves a keeper and the timed relaunch.
RELAUNCH_PAUSE = 1.0


def timed(argv: List[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')[-500:]}")
    return took


def plain_argv(rootfs: Path, work: Path, runtime_dir: str, ident: sandbox.Identity,
               program: List[str]) -> List[str]:
    """The BWRAP call of fim with the root directory as the lower dir."""
    upper, wdir = work / "upper", work / "work"
    for d in (upper, wdir):
        d.mkdir(parents=True, exist_ok=True)
    # bubblewrap makes the home dir; as an ordinary user it may not write in the
    # root's /home, so the upper dir holds it already.
    (upper / ident.home.lstrip("/")).mkdir(parents=True, exist_ok=True)
    passwd, group = work / "passwd", work / "group"
    etc = rootfs / "etc"
    passwd.write_text(sandbox.passwd_text((etc / "passwd").read_text(), ident))
    group.write_text(sandbox.group_text((etc / "group").read_text(), ident))
    box = sandbox.Sandbox(
        bwrap=rawtools.commands(runtime_dir)["bwrap"],
        root_args=native_overlay.bwrap_args([str(rootfs)], str(upper), str(wdir)),
        identity=ident, passwd=str(passwd), group=str(group), chdir=ident.home,
        status_fd=None, program=program,
    )
    return sandbox.argv(box)


def stop_keepers(base: Path) -> None:
    """SIGTERM to the keepers the relaunches left (they unmount and end)."""
    for image in base.glob("*/app.flatimage"):
        listed = subprocess.run([str(image), "fim-instance", "list"], capture_output=True,
                                text=True, env=dict(os.environ, FIM_KEEP="0"))
        for line in listed.stdout.split():
            if line.startswith("keeper:"):
                try:
                    os.kill(int(line.split(":")[1]), 15)
                except OSError:
                    pass


def ratio_line(name: str, values: List[float], base: List[float]) -> Tuple[float, float]:
    ratios = [v / b for v, b in zip(values, base)]
    return statistics.median(values), statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", required=True, type=Path,
                        help="a Debian root directory with python3 (fim rootfs debian)")
    parser.add_argument("--image", type=Path, help="use this image (built from --rootfs) "
                        "instead of building one")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user", help="run every side as this unprivileged user (needs root)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--program", action="append", default=[], metavar="NAME=COMMAND")
    parser.add_argument("--casefold", action="store_true", help="fim-casefold on in the image")
    parser.add_argument("--no-relaunch", action="store_true")
    args = parser.parse_args()
    programs = {n: PROGRAMS[n] for n in args.programs.split(",") if n}
    for entry in args.program:
        name, _, command = entry.partition("=")
        programs[name] = shlex.split(command)
    backends = [b for b in args.backends.split(",") if b]

    base = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    os.chmod(base, 0o755)
    try:
        image = base / "app.flatimage"
        if args.image:
            shutil.copy2(args.image, image)
        else:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fim", "build", str(args.rootfs), str(image)],
                           check=True)
            print(f"built in {time.perf_counter() - start:.1f} s, "
                  f"{image.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        if args.casefold:
            subprocess.run([str(image), "fim-casefold", "on"], check=True)
        uid, gid, user, wrap = os.getuid(), os.getgid(), "root", []
        if args.user:
            import pwd

            entry = pwd.getpwnam(args.user)
            uid, gid, user = entry.pw_uid, entry.pw_gid, args.user
            wrap = ["runuser", "-u", args.user, "--"]
        ident = rawtools.identity(uid, gid, user)
        env = dict(os.environ)
        env.pop("FIM_DEBUG", None)
        # One copy per backend: each has its own data dir and keeper, so that a side
        # neither converts another's upper dir nor retires another's keeper.
        images = {b: base / b / "app.flatimage" for b in backends}
        for copy in images.values():
            copy.parent.mkdir()
            shutil.copy2(image, copy)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(base)], check=True)
        subprocess.run(wrap + [str(image), "fim-exec", "true"], check=True,
                       env=dict(env, FIM_KEEP="0"))
        gdir = "/tmp/fim" if os.stat("/tmp/fim").st_uid == uid else f"/tmp/fim-{uid}"
        runtime_dir = f"{gdir}/app/{header.read(str(image)).build_id}/runtime"

        sides: Dict[str, Tuple[str, Optional[str], bool]] = {"plain": ("plain", None, False)}
        for b in backends:
            sides[b] = ("fim", b, False)
            if not args.no_relaunch:
                sides[b + "+"] = ("fim", b, True)
        times: Dict[Tuple[str, str], List[float]] = {}

        def run(side: str, name: str, program: List[str]) -> float:
            kind, backend, relaunch = sides[side]
            if kind == "plain":
                work = base / "plain"
                argv = wrap + plain_argv(args.rootfs, work, runtime_dir, ident, program)
                if work.stat().st_uid != uid:
                    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(work)], check=True)
                return timed(argv, env)
            side_env = dict(env, FIM_OVERLAY=str(backend))
            argv = wrap + [str(images[str(backend)]), "fim-exec"] + program
            if relaunch:
                timed(argv, side_env)
                time.sleep(RELAUNCH_PAUSE)
                return timed(argv, side_env)
            return timed(argv, dict(side_env, FIM_KEEP="0"))

        for name, program in programs.items():  # warm the page cache, make data dirs
            for side in sides:
                run(side, name, program)
        for _ in range(args.runs):
            for name, program in programs.items():
                for side in sides:
                    times.setdefault((name, side), []).append(run(side, name, program))

        load = os.getloadavg()[0]
        who = args.user or "root"
        print(f"app start, {args.runs} alternating rounds, as {who}, load {load:.2f}"
              f"{', casefold on' if args.casefold else ''} (median ms; ratio = median of "
              "per-round ratios to plain)\n")
        print("| program | " + " | ".join(sides) + " |")
        print("|---|" + "---|" * len(sides))
        for name in programs:
            cells = []
            for side in sides:
                ms, r = ratio_line(side, times[(name, side)], times[(name, "plain")])
                cells.append(f"{ms * 1000:.0f}" + ("" if side == "plain" else f" ({r:.2f}x)"))
            print(f"| {name} | " + " | ".join(cells) + " |")
        if "bwrap" in backends:
            print("\ncold against BWRAP cold (median of per-round ratios):")
            for name in programs:
                parts = []
                for b in backends:
                    if b != "bwrap":
                        _, r = ratio_line(b, times[(name, b)], times[(name, "bwrap")])
                        parts.append(f"{b} {r:.2f}x")
                print(f"  {name}: " + ", ".join(parts))
    finally:
        stop_keepers(base)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

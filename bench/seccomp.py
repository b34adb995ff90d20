#!/usr/bin/env python3
"""What the seccomp filter costs: building it at each start, and each call made under it.

The start-up side is `seccomp.program()` plus the pipe bubblewrap reads it from, timed
in this interpreter. The per-call side is a small C loop (gcc needed) that makes the
same call a million times, once without the program and once with it installed:
getppid, whose number alone lets it through (what any filter costs: the kernel's
slower entry for a filtered process), and ioctl(FIONREAD), whose request the program
compares with TIOCSTI and TIOCLINUX before letting it through. Runs alternate; medians.

    .venv/bin/python bench/seccomp.py [--runs 15]
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

from fim.runtime import seccomp

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

int main(int argc, char **argv) {
    static unsigned char code[65536];
    long n = atol(argv[2]);
    int fds[2], avail;
    if (argv[1][0] == '1') {
        size_t len = fread(code, 1, sizeof code, stdin);
        struct sock_fprog prog = { (unsigned short)(len / 8), (struct sock_filter *)code };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
            return perror("seccomp"), 1;
    }
    if (pipe(fds)) return 1;
    struct timespec a, b, c;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) getppid();
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (long i = 0; i < n; i++) ioctl(fds[0], FIONREAD, &avail);
    clock_gettime(CLOCK_MONOTONIC, &c);
    printf("%.1f %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n,
           ((c.tv_sec - b.tv_sec) * 1e9 + (c.tv_nsec - b.tv_nsec)) / n);
    return 0;
}
"""


def build_cost(runs: int) -> float:
    """Median microseconds to build the program (ownership rule included) and pipe it."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fd = seccomp.as_fd(seccomp.program(os.uname().machine, True) or b"")
        os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    program = seccomp.program(os.uname().machine)
    if program is None:
        print(f"no seccomp program for {os.uname().machine}")
        return 1
    print(f"program: {len(program) // 8} instructions, {len(program)} bytes; "
          f"with the ownership rule {len(seccomp.program(os.uname().machine, True) or b'') // 8}")
    print(f"build + pipe: {build_cost(1000):.0f} us (median of 1000)")
    if shutil.which("gcc") is None:
        print("no gcc: per-call cost not measured")
        return 0
    work = Path(tempfile.mkdtemp(prefix="fim-bench-seccomp-"))
    try:
        (work / "loop.c").write_text(LOOP_C)
        subprocess.run(["gcc", "-O2", "-o", str(work / "loop"), str(work / "loop.c")],
                       check=True)
        results: dict = {"0": [], "1": []}
        for _ in range(args.runs):
            for install in ("0", "1"):
                r = subprocess.run([str(work / "loop"), install, str(args.calls)],
                                   input=program, capture_output=True, check=True)
                results[install].append([float(x) for x in r.stdout.split()])
        for label, index in (("getppid", 0), ("ioctl FIONREAD", 1)):
            without = statistics.median(r[index] for r in results["0"])
            within = statistics.median(r[index] for r in results["1"])
            print(f"{label}: {without:.1f} ns without, {within:.1f} ns with the program "
                  f"(+{within - without:.1f} ns)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

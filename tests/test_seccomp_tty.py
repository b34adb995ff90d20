"""The seccomp filter on a real terminal, as root and as an ordinary user: a program
inside fim-exec cannot push keystrokes into the user's shell (TIOCSTI, also with
the upper bits of the request set and through the i386 ABI; TIOCLINUX), the other
refused calls answer as docs/hardening.md says, what is allowed answers as it does
outside, and an interactive shell inside keeps its job control.

The probe is a small static C program (gcc and a static libc are needed), made once
and bound into each test's image with fim-bind; it prints `probe errno` per call.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path
from typing import Dict, Iterator, Sequence

import pytest
from conftest import Runner

SETSID = shutil.which("setsid") or "/usr/bin/setsid"
PROBE_IN = "/opt/probe/probe"

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static char byte;  /* static: below 4 GiB, where an i386 call can point */

static long answer(long r) { return r < 0 ? errno : 0; }

static long i386_tiocsti(void) {
#if defined(__x86_64__)
    long r;
    __asm__ volatile ("int $0x80" : "=a"(r)
                      : "0"(54L), "b"(0L), "c"((long)TIOCSTI), "d"((long)&byte) : "memory");
    return r < 0 ? -r : 0;
#else
    return -1;
#endif
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *p = argv[i];
        long r;
        pid_t sid;
        byte = '\0';
        if (!strncmp(p, "inject:", 7)) {  /* the text, then Enter, as typed */
            r = 0;
            for (const char *c = p + 7; *c && !r; c++) r = answer(ioctl(0, TIOCSTI, c));
            if (!r) r = answer(ioctl(0, TIOCSTI, "\n"));
            p = "inject";
        }
        else if (!strcmp(p, "ctty")) r = answer(ioctl(0, TIOCGSID, &sid));
        else if (!strcmp(p, "sti"))
            r = answer(syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI, &byte));
        else if (!strcmp(p, "sti_high"))
            r = answer(syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | 1UL << 32, &byte));
        else if (!strcmp(p, "sti_i386")) r = i386_tiocsti();
        else if (!strcmp(p, "linux")) {
            byte = 6;  /* TIOCL_GETSHIFTSTATE */
            r = answer(syscall(SYS_ioctl, 0, (unsigned long)TIOCLINUX, &byte));
        }
        else if (!strcmp(p, "winsize")) { struct winsize w; r = answer(ioctl(0, TIOCGWINSZ, &w)); }
        else if (!strcmp(p, "keyctl")) r = answer(syscall(SYS_keyctl, 0, -3, 0));
        else if (!strcmp(p, "perf")) r = answer(syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
        else if (!strcmp(p, "vsock")) r = answer(socket(40, SOCK_STREAM, 0));
        else if (!strcmp(p, "unix")) r = answer(socket(AF_UNIX, SOCK_STREAM, 0));
        else if (!strcmp(p, "userns")) r = answer(unshare(CLONE_NEWUSER));
        else if (!strcmp(p, "clone3")) r = answer(syscall(SYS_clone3, NULL, 0));
        else if (!strcmp(p, "personality")) r = answer(personality(0xffffffff));
        else { fprintf(stderr, "unknown probe %s\n", p); return 2; }
        printf("%s %ld\n", p, r);
        fflush(stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe_dir() -> Iterator[Path]:
    """The probe, in a directory every identity can read (not under /root)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to make the probe")
    path = Path(tempfile.mkdtemp(prefix="fim-probe-"))
    try:
        os.chmod(path, 0o755)
        (path / "probe.c").write_text(PROBE_C)
        r = subprocess.run(["gcc", "-static", "-O1", "-o", str(path / "probe"),
                            str(path / "probe.c")], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a static probe: {r.stderr.strip()[-200:]}")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def probed(image: Path, runner: Runner, probe_dir: Path) -> Path:
    r = runner.run([str(image), "fim-bind", "add", "ro", str(probe_dir), "/opt/probe"])
    assert r.returncode == 0, r.stderr
    return image


def kernel_allows_tiocsti(runner: Runner) -> bool:
    """Whether TIOCSTI on one's own terminal works outside fim: always for root
    (CAP_SYS_ADMIN); for others unless dev.tty.legacy_tiocsti=0 (Linux 6.2+)."""
    try:
        legacy = Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip()
    except OSError:
        legacy = "1"  # before 6.2: no such switch, TIOCSTI always there
    return runner.uid == 0 or legacy != "0"


class Terminal:
    """A pseudo-terminal whose slave is the controlling terminal of `argv` (made a
    session leader by setsid -c), read and typed into from the master side."""

    def __init__(self, runner: Runner, argv: Sequence[str], env: Dict[str, str]) -> None:
        self.master, slave = os.openpty()
        # A window size, as a terminal emulator sets one (rows, columns, pixels).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        full = dict(os.environ, **env)
        full.pop("FIM_DEBUG", None)
        try:
            self.proc = runner.popen([SETSID, "-w", "-c", *argv], stdin=slave, stdout=slave,
                                     stderr=slave, env=full)
        finally:
            os.close(slave)
        self.seen = b""

    def until(self, text: str, timeout: float = 60) -> str:
        """Everything up to and including `text`; fails after `timeout` seconds."""
        end = time.monotonic() + timeout
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {text!r} in {timeout} s; the terminal showed "
                                     f"{self.seen.decode(errors='replace')!r}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {text!r}: {self.seen!r}")
            self.seen += chunk
        cut = self.seen.index(text.encode()) + len(text)
        shown, self.seen = self.seen[:cut], self.seen[cut:]
        return shown.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 60) -> int:
        """The exit code, once what runs on the terminal has ended."""
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Hang up (SIGHUP to the session, as closing a terminal window does) and wait:
        what a failed test started ends with it."""
        os.close(self.master)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def probe(runner: Runner, argv: Sequence[str]) -> Dict[str, int]:
    """The probe's answers, run as `argv` with a pty slave as its controlling terminal."""
    master, slave = os.openpty()
    try:
        p = runner.popen([SETSID, "-w", "-c", *argv], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, (p.returncode, out, err)
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


CALLS = ["ctty", "sti", "sti_high", "linux", "winsize", "keyctl", "perf", "vsock", "unix",
         "userns", "clone3", "personality"]


def test_terminal_injection_and_the_other_calls_are_refused(probed: Path, runner: Runner,
                                                             probe_dir: Path) -> None:
    outside = probe(runner, [str(probe_dir / "probe"), *CALLS])
    inside = probe(runner, [str(probed), "fim-exec", PROBE_IN, *CALLS])
    # The terminal is the probe's controlling terminal inside too: an EPERM is the
    # filter's, not the kernel's (which refuses TIOCSTI on another terminal so).
    assert outside["ctty"] == inside["ctty"] == 0
    if kernel_allows_tiocsti(runner):
        assert outside["sti"] == outside["sti_high"] == 0
    else:  # dev.tty.legacy_tiocsti=0: the kernel says EIO, the filter still EPERM
        assert outside["sti"] == errno.EIO
    assert inside["sti"] == inside["sti_high"] == errno.EPERM
    assert outside["linux"] == errno.ENOTTY  # a pty is no virtual console
    assert inside["linux"] == errno.EPERM
    assert outside["perf"] == errno.EFAULT  # reached the kernel (no attributes given)
    assert inside["perf"] == inside["keyctl"] == errno.EPERM
    assert inside["vsock"] == errno.EAFNOSUPPORT
    # Left to the kernel: the same answers inside and out.
    for call in ("winsize", "unix", "userns", "clone3", "personality"):
        assert inside[call] == outside[call], call
    assert inside["clone3"] == errno.EINVAL  # not ENOSYS: glibc keeps using it


def test_i386_calls_of_a_64_bit_program_are_filtered(probed: Path, runner: Runner,
                                                     probe_dir: Path) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the i386 ABI is x86_64's")
    master, slave = os.openpty()
    try:
        # Alone: without IA32 emulation int 0x80 kills the probe.
        r = subprocess.run(runner.argv([SETSID, "-w", "-c", str(probe_dir / "probe"),
                                        "sti_i386"]), stdin=slave, capture_output=True,
                           text=True, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    if r.returncode != 0:
        pytest.skip("this kernel runs no i386 calls")
    assert r.stdout == ("sti_i386 0\n" if kernel_allows_tiocsti(runner) else "sti_i386 5\n")
    inside = probe(runner, [str(probed), "fim-exec", PROBE_IN, "ctty", "sti_i386"])
    assert inside == {"ctty": 0, "sti_i386": errno.EPERM}


# `echo $((6*7))INJECTED` shows 42INJECTED only when a shell runs it: the terminal's
# echo of the injected keys and of the typed command line show it unexpanded.
INJECT = "'inject:echo $((6*7))INJECTED'"


def test_nothing_typed_by_the_program_runs_in_the_users_shell(probed: Path, runner: Runner,
                                                              probe_dir: Path) -> None:
    """The CVE-2017-5226 scenario: the user's own shell on a terminal runs a program;
    what the program pushes into the terminal's input would run once it ends."""
    if not kernel_allows_tiocsti(runner):
        pytest.skip("this kernel refuses TIOCSTI outside fim as well (legacy_tiocsti=0)")
    term = Terminal(runner, ["sh", "-i"], {"PS1": "host$ ", "ENV": ""})
    try:
        term.until("host$ ")
        # Outside fim, the shell runs the injected line: the scenario is real here.
        term.type(f"{probe_dir / 'probe'} {INJECT}; echo DO''NE\n")
        shown = term.until("DONE")
        assert "inject 0" in shown, shown
        term.type("echo END''ONE\n")
        assert "42INJECTED" in term.until("ENDONE")
        term.type(f"{probed} fim-exec {PROBE_IN} {INJECT}; echo DO''NE\n")
        shown = term.until("DONE")
        assert f"inject {errno.EPERM}" in shown, shown
        term.type("echo END''TWO\n")
        assert "42INJECTED" not in term.until("ENDTWO")
        term.type("exit\n")
        assert term.wait() == 0
    finally:
        term.close()


def test_an_interactive_shell_inside_keeps_job_control(image: Path, runner: Runner) -> None:
    """bubblewrap's --new-session would have closed TIOCSTI too, by taking the
    terminal away: no foreground group, so no Ctrl-Z, bg, fg, or Ctrl-C of one job."""
    term = Terminal(runner, [str(image), "fim-exec", "sh", "-i"], {"PS1": "box$ ", "ENV": ""})
    try:
        prompt = "box$ "
        term.until(prompt)
        # bubblewrap shows the terminal as /dev/console; its size is the terminal's.
        term.type("tty && stty size\n")
        shown = term.until(prompt)
        assert "/dev/console" in shown and "24 80" in shown, shown
        term.type("sleep 300 &\n")
        term.until(prompt)
        term.type("jobs\n")
        assert "Running" in term.until(prompt)
        term.type("sleep 301\n")
        time.sleep(1)
        term.type("\x1a")  # Ctrl-Z: the terminal stops the foreground job
        assert "Stopped" in term.until(prompt)
        term.type("bg %2\n")
        term.until(prompt)
        term.type("jobs\n")
        shown = term.until(prompt)
        assert shown.count("Running") == 2, shown
        term.type("kill %1\n")
        term.until(prompt)
        term.type("fg %2\n")
        time.sleep(1)
        term.type("\x03")  # Ctrl-C: to the foreground job, not to the shell
        term.until(prompt)
        term.type("jobs; echo JOBS''LEFT\n")
        shown = term.until("JOBSLEFT")
        assert "Running" not in shown and "Stopped" not in shown, shown
        term.type("exit 3\n")
        assert term.wait() == 3
    finally:
        term.close()

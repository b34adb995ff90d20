"""Desktop programs against real servers, as root and as an ordinary user (slow).

A Debian image with X11, Wayland, PulseAudio and D-Bus clients, made once. For
each runner, real servers run as that runner with its own runtime directory and
X cookie: Xvfb, a headless Weston, PulseAudio with a null sink, a session
dbus-daemon. Each permission opens its server, and nothing opens it without.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from conftest import Runner, cached_rootfs, fim

pytestmark = pytest.mark.slow

CLIENTS = "x11-apps,x11-utils,mesa-utils,libgl1-mesa-dri,wayland-utils,pulseaudio-utils,dbus"
SERVERS = ("Xvfb", "weston", "pulseaudio", "dbus-daemon", "xauth")
SIZE = (320, 240)


@pytest.fixture(scope="session")
def desktop_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [s for s in SERVERS if shutil.which(s) is None]
    if missing:
        pytest.skip(f"servers not installed: {missing}")
    root = cached_rootfs("debian-bookworm-desktop-clients", CLIENTS)
    out = tmp_path_factory.mktemp("desktop") / "desktop.flatimage"
    r = fim("build", str(root), str(out))
    assert r.returncode == 0, r.stderr
    return out


def _landlock_scopes() -> bool:
    from fim.runtime import landlock

    return landlock.abi() >= landlock.MIN_ABI


class Session:
    """The servers of one runner's desktop session, and the environment to reach them."""

    def __init__(self, runner: Runner, base: Path, display: int) -> None:
        self.runner = runner
        self.base = base
        self.display = display
        self.home = base / "home"
        self.run_dir = base / "run"
        self.home.mkdir()
        self.run_dir.mkdir(mode=0o700)
        self.env: Dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "DISPLAY": f":{display}",
            "WAYLAND_DISPLAY": "wayland-fim",
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.run_dir}/bus",
            "XAUTHORITY": "",  # as after startx or ssh -X: the cookie is in ~/.Xauthority
        }
        self.procs: List[subprocess.Popen] = []

    def own(self) -> None:
        if self.runner.user is not None:
            subprocess.run(["chown", "-R", str(self.runner.uid), str(self.base)], check=True)

    def start(self, argv: List[str], ready: Path) -> None:
        log = self.base / f"{Path(argv[0]).name}.log"
        with open(log, "w") as out:
            self.procs.append(subprocess.Popen(self.runner.argv(argv), env=self.env,
                                               stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
        for _ in range(100):
            if ready.exists():
                return
            time.sleep(0.1)
        raise AssertionError(f"{argv[0]} did not start: {log.read_text()}")

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def session(runner: Runner) -> Iterator[Session]:
    base = Path(tempfile.mkdtemp(prefix="fim-desktop-"))
    os.chmod(base, 0o755)
    # One display per runner: both runners' sessions may not overlap in time, but
    # a display left by an interrupted run must not be taken for ours.
    display = 170 + os.getpid() % 40 + (runner.uid != 0)
    s = Session(runner, base, display)
    cookie = s.home / ".Xauthority"
    key = os.urandom(16).hex()
    subprocess.run(["xauth", "-f", str(cookie), "add", f":{display}", ".", key], check=True,
                   capture_output=True)
    s.own()
    try:
        s.start(["Xvfb", f":{display}", "-auth", str(cookie), "-nolisten", "tcp",
                 "-screen", "0", f"{SIZE[0]}x{SIZE[1]}x24"], Path(f"/tmp/.X11-unix/X{display}"))
        s.start(["weston", "--backend=headless-backend.so", "--socket=wayland-fim",
                 "--idle-time=0"], s.run_dir / "wayland-fim")
        s.start(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n",
                 "--load=module-native-protocol-unix",
                 "--load=module-null-sink sink_name=fimnull"], s.run_dir / "pulse/native")
        s.start(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                 f"--address={s.env['DBUS_SESSION_BUS_ADDRESS']}"], s.run_dir / "bus")
        yield s
    finally:
        s.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def app(desktop_image: Path, session: Session) -> Path:
    dest = session.base / "app.flatimage"
    shutil.copy2(desktop_image, dest)
    session.own()
    return dest


def _run(session: Session, app: Path, perms: str, *argv: str,
         extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    r = session.runner.run([str(app), "fim-perms", "clear"], env=session.env)
    assert r.returncode == 0, r.stderr
    if perms:
        r = session.runner.run([str(app), "fim-perms", "set", perms], env=session.env)
        assert r.returncode == 0, r.stderr
    return session.runner.run([str(app), "fim-exec", *argv], env={**session.env, **(extra or {})},
                              timeout=60)


def _distinct_pixels(xwd: bytes) -> int:
    """Distinct colours in a 24-bit XWD screenshot (pixels are its last bytes)."""
    pixels = xwd[-SIZE[0] * SIZE[1] * 4:]
    return len({pixels[i:i + 3] for i in range(0, len(pixels), 4)})


def test_x11_with_the_cookie_from_the_home_alone(app: Path, session: Session) -> None:
    xdpyinfo = ("xdpyinfo",)
    denied = _run(session, app, "", *xdpyinfo)
    assert denied.returncode != 0 and "unable to open display" in denied.stderr
    # The cookie is in ~/.Xauthority, XAUTHORITY is unset, home is not opened.
    r = _run(session, app, "xorg", *xdpyinfo)
    assert r.returncode == 0, r.stderr
    assert f"name of display:    :{session.display}" in r.stdout
    shot = subprocess.run(
        session.runner.argv([str(app), "fim-exec", "sh", "-c",
                             "xeyes -geometry 200x200+0+0 & sleep 2; xwd -root -silent; kill $!"]),
        env=session.env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert shot.returncode == 0, shot.stderr
    # A black screen is one colour; xeyes draws white eyes and black pupils on it.
    assert len(shot.stdout) > SIZE[0] * SIZE[1] * 4 and _distinct_pixels(shot.stdout) >= 2
    glx = _run(session, app, "xorg", "glxinfo", "-B")
    assert glx.returncode == 0 and "OpenGL renderer string" in glx.stdout, glx.stderr


def test_network_alone_does_not_reach_the_display(app: Path, session: Session) -> None:
    # The server's abstract socket exists: without scoping `network` would reach it.
    with open("/proc/net/unix") as f:
        assert f"@/tmp/.X11-unix/X{session.display}" in f.read()
    r = _run(session, app, "network", "xdpyinfo", extra={"FIM_DEBUG": "1"})
    if not _landlock_scopes():
        assert "Abstract sockets: the host's are reachable" in r.stdout
        pytest.skip("this kernel has no Landlock scoping: the hole is documented")
    assert r.returncode != 0 and "unable to open display" in r.stderr
    assert "Abstract sockets: the host's are out of reach (Landlock)" in r.stdout


def test_debug_lists_permissions_and_binds(app: Path, session: Session) -> None:
    r = _run(session, app, "xorg,audio", "true", extra={"FIM_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "D::Permissions: audio,xorg" in lines
    assert "D::Permission: ro-bind-try /tmp/.X11-unix /tmp/.X11-unix" in lines
    assert f"D::Permission: ro-bind-try {session.home}/.Xauthority /tmp/.fim-Xauthority" in lines
    native = f"{session.run_dir}/pulse/native"
    assert f"D::Permission: bind-try {native} {native}" in lines
    pipewire = f"{session.run_dir}/pipewire-0"
    assert f"D::Permission: bind-try {pipewire} {pipewire} (not on this host: skipped)" in lines


def test_wayland(app: Path, session: Session) -> None:
    denied = _run(session, app, "", "wayland-info")
    assert denied.returncode != 0
    r = _run(session, app, "wayland", "wayland-info")
    assert r.returncode == 0, r.stderr
    assert "wl_compositor" in r.stdout
    # Exactly the socket: the rest of the runtime directory stays out.
    r = _run(session, app, "wayland", "ls", "-A", str(session.run_dir))
    assert r.stdout.split() == ["wayland-fim"], r.stdout


def test_audio(app: Path, session: Session) -> None:
    denied = _run(session, app, "", "pactl", "info")
    assert denied.returncode != 0
    r = _run(session, app, "audio", "pactl", "info")
    assert r.returncode == 0, r.stderr
    assert f"Server String: unix:{session.run_dir}/pulse/native" in r.stdout
    assert "Default Sink: fimnull" in r.stdout
    # Half a second of silence played to the null sink.
    play = _run(session, app, "audio", "sh", "-c",
                "head -c 44100 /dev/zero | pacat --raw --rate=44100 --channels=1 --format=s16le")
    assert play.returncode == 0, play.stderr
    r = _run(session, app, "audio", "ls", "-A", f"{session.run_dir}/pulse")
    assert r.stdout.split() == ["native"], r.stdout


def test_dbus_session_bus(app: Path, session: Session) -> None:
    call = ("dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus", "org.freedesktop.DBus.GetId")
    denied = _run(session, app, "", *call)
    assert denied.returncode != 0
    r = _run(session, app, "dbus_user", *call)
    assert r.returncode == 0, r.stderr
    assert "method return" in r.stdout


NVIDIA_VERSION = "550.54.14"
GLCORE = f"""const char *nv_glcore_version(void) {{ return "{NVIDIA_VERSION}"; }}"""
GLX = """const char *nv_glcore_version(void);
const char *glx_vendor(void) { return nv_glcore_version(); }"""
PROBE = """#include <stdio.h>
const char *glx_vendor(void);
int main(void) { printf("driver %s\\n", glx_vendor()); return 0; }"""


def _nvidia_tree(root: Path, build: Path) -> None:
    """Real libraries of a made-up driver, laid out as NVIDIA's installer lays them
    out: versioned files, soname links, an older driver's leftover, manifests."""
    lib = root / "lib"
    lib.mkdir(parents=True)
    glcore = f"libnvidia-glcore.so.{NVIDIA_VERSION}"
    for name, source, soname, needs in (("libnvidia-glcore", GLCORE, glcore, []),
                                        ("libGLX_nvidia", GLX, "libGLX_nvidia.so.0",
                                         [f"-l:{glcore}"])):
        (build / f"{name}.c").write_text(source)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib / f"{name}.so.{NVIDIA_VERSION}"),
                        f"-Wl,-soname,{soname}", str(build / f"{name}.c"), f"-L{lib}", *needs],
                       check=True)
    (lib / "libGLX_nvidia.so.0").symlink_to(f"libGLX_nvidia.so.{NVIDIA_VERSION}")
    shutil.copy2(lib / f"libnvidia-glcore.so.{NVIDIA_VERSION}", lib / "libnvidia-glcore.so.535.1")
    (build / "probe.c").write_text(PROBE)
    subprocess.run(["gcc", "-o", str(build / "probe"), str(build / "probe.c"), f"-L{lib}",
                    f"-Wl,-rpath-link,{lib}", "-l:libGLX_nvidia.so.0"], check=True)
    icd = root / "share/vulkan/icd.d"
    icd.mkdir(parents=True)
    (icd / "nvidia_icd.json").write_text('{"ICD": {"library_path": "libGLX_nvidia.so.0"}}')
    egl = root / "share/glvnd/egl_vendor.d"
    egl.mkdir(parents=True)
    (egl / "10_nvidia.json").write_text('{"ICD": {"library_path": "libEGL_nvidia.so.0"}}')
    (root / "module/nvidia").mkdir(parents=True)
    (root / "module/nvidia/version").write_text(NVIDIA_VERSION + "\n")


CHECK = """cat /proc/self/environ | tr '\\0' '\\n' | grep -E '^(LD_LIBRARY_PATH|XDG_DATA_DIRS)='
/lib64/ld-linux-x86-64.so.2 --list /probe | grep -o '^.*nvidia[^ ]* => [^ ]*'
/probe
ls /run/host-gpu/lib /run/host-gpu/share/vulkan/icd.d /run/host-gpu/share/glvnd/egl_vendor.d
"""


def test_gpu_brings_the_hosts_nvidia_userspace(desktop_image: Path, tmp_path: Path) -> None:
    """The host's driver files appear under /run/host-gpu; the container's own loader
    resolves a program's link to libGLX_nvidia there, of the loaded module's version."""
    if os.getuid() != 0 or shutil.which("gcc") is None or shutil.which("unshare") is None:
        pytest.skip("needs root (a private mount namespace over the host's /usr) and gcc")
    build, tree = tmp_path / "build", tmp_path / "tree"
    build.mkdir()
    _nvidia_tree(tree, build)
    app = tmp_path / "app.flatimage"
    shutil.copy2(desktop_image, app)
    for argv in (["fim-perms", "set", "gpu"], ["fim-bind", "add", "ro", str(build / "probe"),
                                                "/probe"]):
        assert subprocess.run([str(app), *argv], capture_output=True).returncode == 0
    # Seen only in this private mount namespace: the host's lib and share dirs with
    # the driver's files added, and a /sys/module with the module's version.
    host = f"""set -e
mount -t overlay overlay -o lowerdir={tree}/lib:/usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu
mount -t overlay overlay -o lowerdir={tree}/share:/usr/share /usr/share
mount --bind {tree}/module /sys/module
exec "$@"
"""
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", host, "sh",
                        str(app), "fim-exec", "sh", "-c", CHECK],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = [line.strip() for line in r.stdout.splitlines()]
    assert "LD_LIBRARY_PATH=/run/host-gpu/lib" in out
    assert "XDG_DATA_DIRS=/usr/local/share:/usr/share:/run/host-gpu/share" in out
    assert "libGLX_nvidia.so.0 => /run/host-gpu/lib/libGLX_nvidia.so.0" in out
    glcore = f"libnvidia-glcore.so.{NVIDIA_VERSION}"
    assert f"{glcore} => /run/host-gpu/lib/{glcore}" in out
    assert f"driver {NVIDIA_VERSION}" in out
    assert "nvidia_icd.json" in out and "10_nvidia.json" in out
    assert "libnvidia-glcore.so.535.1" not in out

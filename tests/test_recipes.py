"""fim-remote and fim-recipe against a local HTTP server on 127.0.0.1 serving a recipe
tree the test makes: dependencies, a cycle, a missing recipe, a 404, a 500, malformed
JSON, a slow server past the timeout; a real install into a Debian image. Root and
rootless."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from conftest import Runner


def _png(size: int = 16) -> bytes:
    """A real PNG: one colour, 8-bit RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\x20\x80\xe0" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


TREE: Dict[str, object] = {
    "icon.png": _png(),
    "busybox/latest/base.json": {"description": "Base tools", "packages": ["less"]},
    "busybox/latest/app.json": {"packages": ["app"], "dependencies": ["base", "extra"]},
    "busybox/latest/extra.json": {"packages": ["x1", "x2"], "dependencies": ["base"]},
    "busybox/latest/loop1.json": {"packages": [], "dependencies": ["loop2"]},
    "busybox/latest/loop2.json": {"packages": [], "dependencies": ["loop1"]},
    "busybox/latest/broken.json": "{not json",
    "busybox/latest/needsgone.json": {"packages": ["p"], "dependencies": ["gone"]},
    "debian/latest/greet.json": {"description": "Say hello", "packages": ["hello"],
                                 "dependencies": ["pager"],
                                 "desktop": {"name": "Greeter", "icon": "ICON_URL",
                                             "categories": ["Utility"]}},
    "debian/latest/pager.json": {"packages": ["less"]},
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        path = self.path.lstrip("/")
        if path.startswith("slow/"):
            time.sleep(3)
            path = path[len("slow/"):]
        if path.startswith("fail/"):
            self.send_error(500, "Broken server")
            return
        if path not in TREE:
            self.send_error(404, "Not Found")
            return
        value = TREE[path]
        if isinstance(value, bytes):
            body = value
        else:
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = (value if isinstance(value, str) else json.dumps(value)) \
                .replace("ICON_URL", host + "/icon.png").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def run(runner: Runner, image: Path, *args: str, **env: str) -> Tuple[int, str, str]:
    r = runner.run([str(image), *args], env={"FIM_KEEP": "0", **env})
    return r.returncode, r.stdout, r.stderr


def cache(image: Path, dist: str = "busybox") -> Path:
    return image.parent / f".{image.name}.data" / "recipes" / dist / "latest"


def test_remote(image: Path, runner: Runner) -> None:
    assert run(runner, image, "fim-remote", "show") == (125, "", "E::No remote URL configured\n")
    assert run(runner, image, "fim-remote", "set", "https://example.org/recipes/") == (
        0, "Set remote URL to 'https://example.org/recipes/'\n", "")
    assert run(runner, image, "fim-remote", "show") == (0, "https://example.org/recipes/\n", "")
    for bad in ("ftp://example.org/x", "example.org", "http://", "http://a b/"):
        code, _, err = run(runner, image, "fim-remote", "set", bad)
        assert code == 125 and err.startswith(f"E::Invalid remote URL '{bad}'"), err
    code, _, err = run(runner, image, "fim-remote", "set", "https://x.org/" + "a" * 5000)
    assert code == 125 and "is too large" in err
    assert run(runner, image, "fim-remote", "show")[1] == "https://example.org/recipes/\n"
    assert run(runner, image, "fim-remote") == (
        125, "", "E::Missing op for 'fim-remote' (<set|show|clear>)\n")
    assert run(runner, image, "fim-remote", "nope") == (125, "", "E::Invalid remote operation\n")
    assert run(runner, image, "fim-remote", "set") == (
        125, "", "E::Missing URL for 'set' operation\n")
    assert run(runner, image, "fim-remote", "clear") == (0, "Cleared remote URL\n", "")
    assert run(runner, image, "fim-remote", "show")[0] == 125


def test_fetch_info_and_dependencies(image: Path, runner: Runner, server: str) -> None:
    assert run(runner, image, "fim-remote", "set", server + "/")[0] == 0
    code, out, err = run(runner, image, "fim-recipe", "fetch", "app")
    assert (code, err) == (0, ""), err
    assert sorted(out.split("\n")[:-1]) == ["Fetched recipe 'app'", "Fetched recipe 'base'",
                                            "Fetched recipe 'extra'"]
    assert sorted(p.name for p in cache(image).iterdir()) == ["app.json", "base.json",
                                                              "extra.json"]
    code, out, _ = run(runner, image, "fim-recipe", "info", "base,app")
    assert code == 0
    assert out.splitlines() == [
        "Recipe: base", f"Location: {cache(image) / 'base.json'}", "Description: Base tools",
        "Dependencies: 0", "Package count: 1", "Packages:", "  - less",
        "Recipe: app", f"Location: {cache(image) / 'app.json'}", "Dependencies: 2",
        "  - base", "  - extra", "Package count: 1", "Packages:", "  - app"]
    assert run(runner, image, "fim-recipe", "info", "nothere") == (
        125, "", "E::Recipe 'nothere' not found locally. Use 'fim-recipe fetch nothere' first.\n")


def test_failures_leave_the_cache_alone(image: Path, runner: Runner, server: str) -> None:
    run(runner, image, "fim-remote", "set", server)
    assert run(runner, image, "fim-recipe", "fetch", "base")[0] == 0
    before = {p.name: p.read_bytes() for p in cache(image).iterdir()}
    cases = [
        ("loop1", server, "E::Cyclic dependency for recipe 'loop1' (loop1 -> loop2 -> loop1)"),
        ("needsgone", server, f"E::Failed to download '{server}/busybox/latest/gone.json': "
                              "HTTP 404 Not Found"),
        ("broken", server, f"E::Recipe 'broken' from '{server}/busybox/latest/broken.json' "
                           "is not valid JSON"),
        ("base", server + "/fail", f"E::Failed to download '{server}/fail/busybox/latest/"
                                   "base.json': HTTP 500 Broken server"),
        ("base", "http://127.0.0.1:1", "E::Failed to download 'http://127.0.0.1:1/busybox/"
                                       "latest/base.json': [Errno 111] Connection refused"),
    ]
    for name, remote, message in cases:
        run(runner, image, "fim-remote", "set", remote)
        code, out, err = run(runner, image, "fim-recipe", "fetch", name)
        assert code == 125 and out == "" and err.startswith(message), err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in cache(image).iterdir()} == before
    run(runner, image, "fim-remote", "set", server + "/slow")
    start = time.monotonic()
    code, _, err = run(runner, image, "fim-recipe", "fetch", "base", FIM_RECIPE_TIMEOUT="1")
    assert code == 125 and "timed out" in err and time.monotonic() - start < 3, err
    assert run(runner, image, "fim-recipe", "fetch", "base", FIM_RECIPE_TIMEOUT="x")[2] \
        .startswith("E::FIM_RECIPE_TIMEOUT must be")
    # Usage, in FlatImage's words.
    assert run(runner, image, "fim-recipe") == (
        125, "", "E::Missing op for 'fim-recipe' (<fetch|info|install>)\n")
    assert run(runner, image, "fim-recipe", "cook", "x") == (
        125, "", "E::Invalid recipe operation\n")
    assert run(runner, image, "fim-recipe", "fetch") == (
        125, "", "E::Missing recipe for operation\n")
    assert run(runner, image, "fim-recipe", "fetch", "a,,b") == (
        125, "", "E::Recipe argument is empty\n")


def test_install_is_refused_on_busybox(image: Path, runner: Runner, server: str) -> None:
    run(runner, image, "fim-remote", "set", server)
    assert run(runner, image, "fim-recipe", "install", "base") == (
        125, "", "E::Unsupported distribution 'busybox' for recipe installation\n")


@pytest.mark.slow
def test_install_into_debian(debian_image: Path, runner: Runner, workdir: Path,
                             server: str) -> None:
    image = workdir / "debian.flatimage"
    image.write_bytes(debian_image.read_bytes())
    image.chmod(0o755)
    import os

    os.chown(image, runner.uid, -1)
    run(runner, image, "fim-remote", "set", server)
    code, _, err = run(runner, image, "fim-recipe", "install", "greet")
    assert code == 125 and "needs the 'network' permission" in err
    assert run(runner, image, "fim-perms", "add", "network")[0] == 0
    code, out, err = run(runner, image, "fim-recipe", "install", "greet")
    assert code == 0, out + err
    code, out, _ = run(runner, image, "fim-exec", "sh", "-c", "hello; command -v less")
    assert (code, out) == (0, "Hello, world!\n/usr/bin/less\n")
    assert sorted(p.name for p in cache(image, "debian").iterdir()) == [
        "greet.desktop.json", "greet.json", "pager.json"]
    # The recipe's desktop data went through fim-desktop setup.
    code, out, err = run(runner, image, "fim-desktop", "dump", "entry")
    assert code == 0 and "Name=Greeter" in out, out + err

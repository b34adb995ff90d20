"""The builder's command line: rootfs, build, inspect."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional

from fim import __version__
from fim.runtime import overlays
from fim.runtime.errors import EXIT_USAGE, FimError, error
from fim.runtime.image import settings
from fim.runtime.image.file import ImageFile, open_image
from fim.runtime.layers import detect


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        error(message)
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fim", description="Build and inspect fim images.")
    parser.add_argument("--version", action="version", version=f"fim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rootfs = sub.add_parser("rootfs", help="make a root filesystem")
    kinds = rootfs.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    bb = kinds.add_parser("busybox", help="minimal root filesystem from busybox-static")
    bb.add_argument("dir", type=Path)
    deb = kinds.add_parser("debian", help="Debian root filesystem (mmdebstrap or debootstrap)")
    deb.add_argument("dir", type=Path)
    deb.add_argument("--suite", default="bookworm")
    deb.add_argument("--include", default="", help="comma-separated packages to add")
    deb.add_argument("--mirror", help="archive URL (default: the host's apt sources)")

    build = sub.add_parser("build", help="write an executable image from a root filesystem "
                           "or an OCI/Docker image")
    build.add_argument("rootfs", type=Path, metavar="SOURCE",
                       help="a directory, docker-archive:FILE, oci-archive:FILE or "
                            "oci:DIR (each with an optional :TAG)")
    build.add_argument("output", type=Path)
    build.add_argument("--name", help="label recorded in the image (default: file name)")
    build.add_argument("--embed", choices=("all", "bwrap", "none"), default="all",
                       help="native tools carried in the image: all (default; with their "
                            "libraries and loader), only bubblewrap, or none (host tools)")
    build.add_argument("--python", choices=("embed", "none"), default="embed",
                       help="a Python interpreter for hosts without python3 3.9+: embed "
                            "(default; about 8 MB) or none (the host must have one)")
    build.add_argument("--desktop", type=Path, metavar="FILE.json",
                       help="desktop integration (name, icon, categories, integrations), "
                            "as fim-desktop setup takes it")
    build.add_argument("--squash", action="store_true",
                       help="an OCI/Docker image's layers as one fim layer (default: one each)")

    inspect = sub.add_parser("inspect", help="show an image's header, settings and layers")
    inspect.add_argument("image", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def describe(path: str) -> Dict[str, Any]:
    """Everything `fim inspect` reports about an image."""
    image = open_image(path)
    try:
        head = image.header
        problems: List[str] = []
        permissions = image.read_or(settings.PERMISSIONS, problems)
        overlay = overlays.from_byte(image.read_or(settings.OVERLAY, problems))
        casefold = image.read_or(settings.CASEFOLD, problems) != 0
        desktop = image.read_or(settings.DESKTOP, problems)
        icon = image.read_or(settings.ICON, problems)
        notify = image.read_or(settings.NOTIFY, problems) == 1
        scanned = image.chain()
        built = _build_info(image)
    finally:
        image.close()
    return {
        "header": {
            "version": head.version,
            "build_id": head.build_id,
            "reserved": {"offset": head.reserved_offset, "size": head.reserved_size},
            "journal": {"offset": head.journal_offset, "size": head.journal_size},
            "payload": {"offset": head.payload_offset, "size": head.payload_size},
            "chain_offset": head.chain_offset,
        },
        "reserved": {
            "permissions": permissions,
            "overlay": overlay.name if overlay else "unset (BWRAP)",
            "casefold": casefold,
            "notify": notify,
            "desktop": None if desktop is None else {
                "name": desktop.name, "categories": list(desktop.categories),
                "integrations": list(desktop.integrations),
                "icon": None if icon is None else {"type": icon.kind, "size": len(icon.data)},
            },
        },
        "layers": [
            {"index": e.index, "offset": e.offset, "size": e.size,
             "format": detect(path, e.offset) or "unknown"}
            for e in scanned.elements
        ],
        "torn_bytes": scanned.torn or 0,
        "build": built,
    }


def _build_info(image: ImageFile) -> Dict[str, Any]:
    """The image's build.json (name, distribution, OCI source and labels), {} when its
    payload has none."""
    from fim.builder import payload

    head = image.header
    raw = payload.read_entry(os.pread(image.fd, head.payload_size, head.payload_offset),
                             "build.json")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _print_text(info: Dict[str, Any]) -> None:
    h = info["header"]
    print(f"format version  {h['version']}")
    print(f"build id        {h['build_id']}")
    for part in ("reserved", "journal", "payload"):
        print(f"{part:<15} offset {h[part]['offset']}, {h[part]['size']} bytes")
    print(f"layer chain     offset {h['chain_offset']}")
    r = info["reserved"]
    print(f"overlay         {r['overlay']}")
    print(f"casefold        {'on' if r['casefold'] else 'off'}")
    print(f"permissions     {r['permissions']:#x}")
    print(f"notify          {'on' if r['notify'] else 'off'}")
    d = r["desktop"]
    if d is not None:
        icon = f"{d['icon']['type']}, {d['icon']['size']} bytes" if d["icon"] else "none"
        print(f"desktop         {d['name']} (integrations: "
              f"{','.join(d['integrations']) or 'none'}; icon: {icon})")
    print("layers")
    for layer in info["layers"]:
        print(f"  {layer['index']:>3}  offset {layer['offset']:>12}  size {layer['size']:>12}"
              f"  {layer['format']}")
    labels = info["build"].get("labels") or {}
    if labels:
        print("labels")
        for key in sorted(labels):
            print(f"  {key}={labels[key]}")
    origin = info["build"].get("source")
    if origin:
        print(f"built from      {origin.get('image')} ({origin.get('layers')} OCI layers)")
    if info["torn_bytes"]:
        print(f"  (incomplete last layer: {info['torn_bytes']} bytes, ignored)")


def _progress() -> Callable[[str, bool], None]:
    """Progress of a long build on a terminal (stderr), updated in place; nothing when
    stderr is no terminal, as the runtime's long commands do (fim-recipe)."""
    if not sys.stderr.isatty():
        return lambda _text, _done: None
    last = [0.0]

    def report(text: str, done: bool) -> None:
        now = time.monotonic()
        if not done and now - last[0] < 0.2:
            return
        last[0] = now
        sys.stderr.write("\r" + text + "\x1b[K" + ("\n" if done else ""))
        sys.stderr.flush()

    return report


def _desktop(path: Path) -> Callable[[ImageFile], None]:
    """The desktop settings of `path` (fim-desktop setup's checks), to write into the
    image being built."""
    from fim.runtime.desktop import setup

    prepared = setup.load(str(path))

    def configure(handle: ImageFile) -> None:
        handle.write(settings.ICON, prepared.icon)
        handle.write(settings.DESKTOP, prepared.desktop)

    return configure


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "rootfs":
            from fim.builder import rootfs

            if args.kind == "busybox":
                rootfs.busybox(args.dir)
            else:
                rootfs.debian(args.dir, args.suite, args.include.split(","), args.mirror)
        elif args.command == "build":
            from fim.builder import image, oci
            from fim.runtime.layers import compression_level

            # Checked before anything is built: a bad file or level leaves no output.
            level = compression_level(os.environ)
            configure = _desktop(args.desktop) if args.desktop else None
            if oci.is_image(str(args.rootfs)):
                oci.build(str(args.rootfs), args.output, args.name, args.embed, args.python,
                          args.squash, _progress(), configure, level)
            else:
                image.build(args.rootfs, args.output, args.name, args.embed, args.python,
                            configure, level)
        elif args.command == "inspect":
            info = describe(str(args.image))
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                _print_text(info)
    except FimError as e:
        error(e.message)
        return e.code
    return 0

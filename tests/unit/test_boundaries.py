"""The lines the code does not cross, read from its imports with `ast`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator, Tuple

RUNTIME = Path(__file__).resolve().parents[2] / "src/fim/runtime"


def _module(path: Path) -> str:
    rel = path.relative_to(RUNTIME.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:
                # `from fim import builder` imports a module, not a name.
                yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, node.lineno


def _files(under: str = "") -> Iterator[Path]:
    yield from sorted((RUNTIME / under).rglob("*.py"))


def test_runtime_imports_only_the_standard_library_and_itself() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in _files():
        for name, line in imports(path):
            top = name.split(".")[0]
            where = f"{path}:{line}: {name}"
            assert top == "fim" or top in stdlib, where
            assert not name.startswith(("fim.builder", "fim.cli")), where
            if top == "fim":
                assert name == "fim" or name.startswith("fim.runtime"), where


def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    fake = RUNTIME / "_probe_for_test.py"
    try:
        fake.write_text("from fim import builder\nimport json as j\nfrom . import errors\n"
                        "x = __import__('fim.runtime.casefold')\n")
        found = {name for name, _ in imports(fake)}
    finally:
        fake.unlink()
    assert {"fim.builder", "json", "fim.runtime.errors", "fim.runtime.casefold"} <= found


def test_image_format_knows_nothing_of_mounts_or_commands() -> None:
    allowed = ("fim.runtime.image", "fim.runtime.errors", "fim.runtime.record")
    for path in _files("image"):
        for name, line in imports(path):
            if name.startswith("fim"):
                assert name.startswith(allowed), f"{path}:{line}: {name}"


def test_backends_do_not_import_each_other() -> None:
    backends = {"bwrap", "fuse_overlayfs", "unionfs"}
    for name in backends:
        path = RUNTIME / "overlays" / f"{name}.py"
        for imported, line in imports(path):
            for other in backends - {name}:
                assert not imported.startswith(f"fim.runtime.overlays.{other}"), \
                    f"{path}:{line}: {imported}"


def test_the_pipeline_names_no_backend() -> None:
    text = (RUNTIME / "container.py").read_text()
    for word in ("OVERLAYFS", "UNIONFS", "BWRAP", "fuse_overlayfs", "unionfs."):
        assert word not in text.replace("unionfs-fuse...", ""), word


def test_commands_hold_no_mount_logic() -> None:
    forbidden = ("fim.runtime.libc", "fim.runtime.mounts", "fim.runtime.namespaces",
                 "fim.runtime.overlays.bwrap", "fim.runtime.overlays.fuse_overlayfs",
                 "fim.runtime.overlays.unionfs", "fim.runtime.layers.mount")
    for path in _files("commands"):
        for name, line in imports(path):
            assert not name.startswith(forbidden), f"{path}:{line}: {name}"


def test_only_the_libc_module_loads_c_functions() -> None:
    for path in _files():
        if path.name == "libc.py":
            continue
        for name, line in imports(path):
            assert name not in ("_ctypes", "ctypes"), f"{path}:{line}: {name}"


def test_only_the_process_helper_starts_processes() -> None:
    for path in _files():
        if path.name in ("process.py", "bootstrap.py"):
            continue
        text = path.read_text()
        for call in ("posix_spawn(", "os.fork(", "subprocess", "waitpid("):
            assert call not in text, f"{path}: {call}"

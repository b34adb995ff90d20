"""An interpreter for hosts without python3 (docs/portability.md, "Hosts without python3").

The builder's own Python (its executable, the shared libraries it loads and its
dynamic loader, the same way bundle.py embeds the native tools) and exactly the
standard-library modules the runtime imports: computed from the runtime's own
sources (every import outside `if TYPE_CHECKING:` blocks, then everything those
standard modules import in turn), compiled, in a zip on `sys.path`. The extension
modules among them come with their libraries.

It is packed as one gzip-compressed tar, laid out as a Python installation
(`bin/python3`, `lib/pythonXY.zip`, `lib/pythonX.Y/lib-dynload/`, `lib/ld.so` and
libraries), so that the interpreter finds its standard library from its own place
(the zip is one of its default `sys.path` entries) while running with `-I`. The
launcher extracts it with `tail`, `head`, `gzip` and `tar` (every host with a
shell has them: coreutils or busybox) when no host python3 3.9+ is found.
"""

from __future__ import annotations

import ast
import io
import os
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from fim.builder.bundle import dependencies
from fim.runtime.errors import FimError

# Modules Python's start-up needs before any import of ours (the rest is frozen or
# built in): the codec machinery for the file system and standard streams.
STARTUP = ("encodings", "encodings.aliases", "encodings.utf_8", "encodings.ascii",
           "encodings.latin_1")
# Reached by the closure only through code the runtime never runs (a module's own
# self-test, its command-line interface, tooling).
EXCLUDED = ("tkinter", "test", "unittest", "doctest", "pydoc", "lib2to3", "distutils", "pdb",
            "idlelib", "ensurepip", "setuptools", "pip", "_pydecimal", "_testcapi",
            "_testinternalcapi")
MODES = ("embed", "none")
DEFAULT = "embed"


def _imports_of(source: str) -> Iterator[str]:
    """Absolute imports in `source`, those under `if TYPE_CHECKING:` left out (they
    never run: annotations only)."""
    def walk(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) \
                    and child.test.id == "TYPE_CHECKING":
                for other in child.orelse:
                    yield from walk(other)
                continue
            if isinstance(child, ast.Import):
                yield from (alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module
            yield from walk(child)

    yield from walk(ast.parse(source))


def runtime_imports(root: Path) -> Set[str]:
    """The modules outside fim that the runtime package at `root` imports."""
    found: Set[str] = set()
    for path in sorted(root.rglob("*.py")):
        found.update(n for n in _imports_of(path.read_text()) if n.split(".")[0] != "fim")
    return found


def closure(names: Set[str]) -> Tuple[Dict[str, str], List[str]]:
    """{module: source file} of the pure-Python standard modules `names` need, and the
    extension modules' files, as this interpreter resolves them."""
    import modulefinder

    stdlib = sysconfig.get_paths()["stdlib"]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as entry:
        entry.write("\n".join(f"import {n}" for n in sorted(names | set(STARTUP))))
    try:
        finder = modulefinder.ModuleFinder(excludes=list(EXCLUDED))
        finder.run_script(entry.name)
    finally:
        os.unlink(entry.name)
    sources: Dict[str, str] = {}
    extensions: List[str] = []
    for name, module in finder.modules.items():
        path = getattr(module, "__file__", None)  # modulefinder's records, untyped
        if not path or not path.startswith(stdlib + os.sep):
            continue
        if path.endswith(".py"):
            sources[name] = path
        elif path.endswith(".so"):
            extensions.append(path)
    missing = set(STARTUP) - set(sources)
    if missing:
        raise FimError(f"This Python lacks {', '.join(sorted(missing))}: cannot embed it")
    return sources, sorted(extensions)


def _stdlib_zip(sources: Dict[str, str]) -> bytes:
    """The modules compiled without docstrings and asserts (as under python -OO: the
    zip's .pyc is what is imported whatever the flags), no source (an unchecked hash
    stands for its stamp), stored uncompressed: the archive around it is compressed,
    and an import then reads without inflating."""
    import py_compile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z, \
            tempfile.TemporaryDirectory() as tmp:
        for name, path in sorted(sources.items()):
            base = name.replace(".", "/")
            arc = base + ("/__init__" if os.path.basename(path) == "__init__.py" else "")
            compiled = os.path.join(tmp, "m.pyc")
            py_compile.compile(path, cfile=compiled, dfile=arc + ".py", doraise=True,
                               optimize=2,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            z.write(compiled, arc + ".pyc")
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def archive(runtime_root: Optional[Path] = None, executable: str = sys.executable) -> bytes:
    """The interpreter, its libraries and the runtime's standard modules, as .tar.gz."""
    if runtime_root is None:
        import fim.runtime

        runtime_root = Path(fim.runtime.__file__).parent
    binary = os.path.realpath(executable)
    sources, extensions = closure(runtime_imports(runtime_root))
    libraries: Dict[str, str] = {}
    loader = None
    for path in [binary] + extensions:
        libs, found = dependencies(path)
        libraries.update(libs)
        loader = loader or found
    if loader is None:
        raise FimError(f"Cannot find the dynamic loader of '{binary}' (ldd): cannot embed it")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=9) as tar:
        _add(tar, "bin/python3", Path(binary).read_bytes(), 0o755)
        _add(tar, "lib/ld.so", Path(loader).read_bytes(), 0o755)
        for name, path in sorted(libraries.items()):
            _add(tar, f"lib/{name}", Path(path).read_bytes(), 0o755)
        _add(tar, f"lib/python{version.replace('.', '')}.zip", _stdlib_zip(sources), 0o644)
        for path in extensions:
            _add(tar, f"lib/python{version}/lib-dynload/{os.path.basename(path)}",
                 Path(path).read_bytes(), 0o755)
    return out.getvalue()

"""Install, refresh and remove an image's desktop files under $XDG_DATA_HOME, and
remember exactly what was installed so that `clean` removes that and nothing else.

State lives in `$XDG_DATA_HOME/fim/desktop/`:

* `BUILD_ID.installed`: one per image (an image and its copies share the build
  id, and install the same names): the stamp of the settings and image file it
  was made from, then the files it installed, one path a line (relative).
* `shared`: what fim made that no single image owns: directories it created
  (`dir PATH`) and the files the cache tools created where none were (`made PATH`:
  mime.cache and the rest of a MIME database, mimeinfo.cache).
* `lock`: held (flock) by every change, so that integrations of several images,
  and a clean, take turns (update-mime-database rewrites the whole database).

A file is removed only when no other image's record lists it (two images of one
name, or FlatImage's generic package, stay until the last one goes). When the last
record goes, the caches are rebuilt without fim's files, what the tools made for
fim alone is removed, then the directories fim created, if empty: after `clean`
of every image, nothing of fim is left. A file fim did not install is never
replaced or removed.
"""

from __future__ import annotations

import os

from fim.runtime import tools
from fim.runtime.desktop import layout, run_tool, stamp
from fim.runtime.errors import debug

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

    from fim.runtime.image.file import ImageFile
    from fim.runtime.image.settings import Desktop, Icon

STATE = "fim/desktop"
SHARED = "shared"
SUFFIX = ".installed"
# Seconds a cache tool may take before it is given up on.
TOOL_TIMEOUT = 60.0
# The caches each kind of file feeds: the tool and its arguments, the directory it
# rebuilds, and whether a cache that does not exist is made (icon themes are read
# without one; one the user has must not go stale).
CACHES = {
    "mime": ("update-mime-database", [], "mime", True),
    "applications": ("update-desktop-database", ["-q"], "applications", True),
    "icons": ("gtk-update-icon-cache", ["-q", "-t", "-f"], "icons/hicolor", False),
}


def _kind(rel: str) -> str:
    return rel.split("/", 1)[0] if not rel.startswith("mime/") else "mime"


class Say:
    """Diagnostics of the background work (FIM_DEBUG only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        debug(self.enabled, f"Desktop: {message}")


# -- records ------------------------------------------------------------------------


def record_path(root: str, build_id: str) -> str:
    return os.path.join(root, STATE, build_id + SUFFIX)


def read_record(path: str) -> Tuple[str, List[str]]:
    """(stamp, files) of an image's record; ("", []) when there is none."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return "", []
    return lines[0], [ln for ln in lines[1:] if ln]


def _write_atomic(path: str, data: bytes) -> None:
    partial = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.partial"
    try:
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


def _records(root: str) -> Iterator[str]:
    try:
        names = os.listdir(os.path.join(root, STATE))
    except FileNotFoundError:
        return
    for name in sorted(names):
        if name.endswith(SUFFIX):
            yield os.path.join(root, STATE, name)


def _owned_by_others(root: str, own: str) -> Set[str]:
    found: Set[str] = set()
    for path in _records(root):
        if path != own:
            found.update(read_record(path)[1])
    return found


def _read_shared(root: str) -> List[Tuple[str, str]]:
    try:
        with open(os.path.join(root, STATE, SHARED), encoding="utf-8",
                  errors="surrogateescape") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        kind, _, rel = line.partition(" ")
        if kind in ("dir", "made") and rel:
            found.append((kind, rel))
    return found


def _write_shared(root: str, entries: List[Tuple[str, str]]) -> None:
    unique = list(dict.fromkeys(entries))
    text = "".join(f"{kind} {rel}\n" for kind, rel in unique)
    _write_atomic(os.path.join(root, STATE, SHARED), text.encode("utf-8", "surrogateescape"))


def _make_dirs(root: str, rel: str, created: List[Tuple[str, str]]) -> None:
    """`root/rel` and its missing parents (`root` too), each one made noted."""
    missing = []
    path = os.path.join(root, rel) if rel else root
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs
        created.append(("dir", os.path.relpath(path, root)))


# -- the lock -----------------------------------------------------------------------


class Lock:
    """The root's lock, held for one change. Taken again when the file was removed
    (by a final clean) between our open and our flock."""

    def __init__(self, root: str, created: List[Tuple[str, str]]) -> None:
        import fcntl

        self.path = os.path.join(root, STATE, "lock")
        while True:
            _make_dirs(root, STATE, created)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Idempotent: the descriptor's number may be another file's once closed."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- files --------------------------------------------------------------------------


def _same_content(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def _outputs(root: str, kind: str) -> Set[str]:
    """What a cache tool has made in its directory (relative paths): the whole MIME
    database but its packages; the files (not entries or subdirectories) at the top
    of the applications and icon theme directories."""
    rel = CACHES[kind][2]
    top = os.path.join(root, rel)
    found: Set[str] = set()
    if kind == "mime":
        for path, dirs, files in os.walk(top):
            here = os.path.relpath(path, root)
            if here == "mime":
                dirs[:] = [d for d in dirs if d != "packages"]
            found.update(os.path.join(here, n) for n in dirs + files)
        return found
    try:
        names = os.listdir(top)
    except OSError:
        return found
    for name in names:
        path = os.path.join(top, name)
        if not name.endswith((".desktop", ".png", ".svg")) and os.path.isfile(path):
            found.add(os.path.join(rel, name))
    return found


def _refresh_caches(root: str, kinds: Set[str], environ: Mapping[str, str],
                    made: List[Tuple[str, str]], say: Say) -> None:
    """Run the cache tools the host has for the changed kinds of file; what they
    create that was not there is noted in `made`."""
    for kind in sorted(kinds):
        tool, args, rel, create = CACHES[kind]
        target = os.path.join(root, rel)
        if not os.path.isdir(target):
            continue
        if not create and not os.path.exists(os.path.join(target, "icon-theme.cache")):
            continue
        if kind == "icons":
            # Icon theme readers look at the theme directory's time for changes.
            os.utime(target)
        path = tools.on_host(tool, environ)
        if path is None:
            say(f"no {tool} on this host: the {kind} cache is not refreshed")
            continue
        before = _outputs(root, kind)
        code = run_tool([path] + args + [target], environ, say.enabled, TOOL_TIMEOUT)
        say(f"{tool} {target}: exit {code}")
        made.extend(("made", entry) for entry in sorted(_outputs(root, kind) - before))


def _remove(root: str, rels: Set[str], say: Say) -> None:
    for rel in sorted(rels):
        try:
            os.unlink(os.path.join(root, rel))
            say(f"removed {rel}")
        except FileNotFoundError:
            pass
        except OSError as e:
            say(f"could not remove {rel}: {e.strerror}")


def _still_needed(root: str, kind: str) -> bool:
    """Whether a cache fim made serves other programs' files once fim's are gone: a
    MIME database while packages are left; an applications cache while it holds an
    association (readers of desktop entries do without one, as they did before)."""
    if kind == "mime":
        try:
            return bool(os.listdir(os.path.join(root, "mime", "packages")))
        except OSError:
            return False
    if kind == "applications":
        try:
            with open(os.path.join(root, "applications", "mimeinfo.cache"),
                      encoding="utf-8", errors="replace") as f:
                return any("=" in line for line in f)
        except OSError:
            return False
    return True  # no icon cache is ever made


def _sweep(root: str, entries: List[Tuple[str, str]], lock: Lock, say: Say) -> None:
    """The last image's files are gone: the caches' files fim alone made, the state,
    then the directories fim created (when empty)."""
    made = [rel for kind, rel in entries if kind == "made"]
    for kind, (_, _, rel, _) in CACHES.items():
        if _still_needed(root, kind):
            continue  # another program's files need the cache: it stays, theirs now
        mine = [m for m in made if m == rel or m.startswith(rel + "/")]
        for entry in sorted(mine, key=len, reverse=True):
            path = os.path.join(root, entry)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
                say(f"removed {entry} ({kind} cache)")
            except OSError:
                pass
    for name in (SHARED, "lock"):
        try:
            os.unlink(os.path.join(root, STATE, name))
        except FileNotFoundError:
            pass
    lock.release()
    dirs = [rel for kind, rel in entries if kind == "dir"]
    for rel in sorted(set(dirs), key=lambda r: r.count("/"), reverse=True):
        try:
            os.rmdir(os.path.join(root, rel) if rel != "." else root)
        except OSError:
            pass  # not empty: it holds what is not fim's


# -- the two changes ------------------------------------------------------------------


def _place(root: str, planned: List[layout.Planned], owned: Set[str],
           created: List[Tuple[str, str]], say: Say) -> Tuple[List[str], Set[str]]:
    """Write the planned files; (the files now ours, the kinds of file changed). A file
    that exists and no fim record lists is another program's, and left alone."""
    ours: List[str] = []
    changed: Set[str] = set()
    for item in planned:
        path = os.path.join(root, item.rel)
        if _same_content(path, item.data):
            ours.append(item.rel)
            continue
        if item.rel not in owned and os.path.lexists(path):
            say(f"left {item.rel} alone: fim did not install it")
            continue
        _make_dirs(root, os.path.dirname(item.rel), created)
        _write_atomic(path, item.data)
        say(f"installed {item.rel}")
        ours.append(item.rel)
        changed.add(_kind(item.rel))
    return ours, changed


def _scaler(say: Say) -> Callable[[Icon], Dict[int, bytes]]:
    def scaled(icon: Icon) -> Dict[int, bytes]:
        from fim.runtime.desktop import png

        picture = png.decode(icon.data)
        say(f"icon {picture.width}x{picture.height} scaled to {layout.SIZES}")
        return {size: png.encode(p) for size, p in png.squares(picture, layout.SIZES).items()}

    return scaled


def apply(root: str, build_id: str, want: str, planned_of: Callable[[], List[layout.Planned]],
          environ: Mapping[str, str], say: Say) -> None:
    """Bring the installed files to what `planned_of()` gives, unless the record's stamp
    already is `want` ("": nothing is to be installed, and `planned_of` is not asked)."""
    mine = record_path(root, build_id)
    if not want and not os.path.exists(mine):
        say("nothing installed")
        return
    created: List[Tuple[str, str]] = []
    lock = Lock(root, created)
    try:
        found, old = read_record(mine)
        if found == want:
            say("already up to date")
            return
        others = _owned_by_others(root, mine)
        ours, changed = _place(root, planned_of() if want else [], others | set(old),
                               created, say)
        stale = set(old) - set(ours) - others
        _remove(root, stale, say)
        changed.update(_kind(rel) for rel in stale)
        _refresh_caches(root, changed, environ, created, say)
        entries = _read_shared(root) + created
        if ours:
            text = want + "\n" + "".join(rel + "\n" for rel in ours)
            _write_atomic(mine, text.encode("utf-8", "surrogateescape"))
        elif os.path.exists(mine):
            os.unlink(mine)
        if not ours and next(_records(root), None) is None:
            _sweep(root, entries, lock, say)
        else:
            _write_shared(root, entries)
    finally:
        lock.release()


def refresh(image: ImageFile, root: str, desktop: Optional[Desktop],
            environ: Mapping[str, str], say: Say) -> None:
    """Install what the image's settings enable (in the background of a start)."""
    from fim.runtime.image.settings import ICON

    def planned() -> List[layout.Planned]:
        if desktop is None or not desktop.integrations:
            return []
        icon = image.read_or(ICON, []) if "ICON" in desktop.integrations else None
        return layout.plan(desktop, icon, image.path, _scaler(say))

    apply(root, image.header.build_id, stamp.of(image, desktop), planned, environ, say)


def clean(root: str, build_id: str, environ: Mapping[str, str], say: Say) -> None:
    """Remove every file this image installed under `root` (and, with the last image,
    every trace of fim there)."""
    apply(root, build_id, "", list, environ, say)

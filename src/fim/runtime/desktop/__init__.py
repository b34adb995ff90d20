"""Desktop integration (fim-desktop) and the start notification (fim-notify).

`on_start` is the only part on the start-up path of a run: it reads the notify byte
and the desktop settings (both in the reserved space, already open), and, when
something is enabled, one small file (the image's record of what it installed,
`install.py`). Only when the record is stale, or a notification is asked for, it
forks a detached, niced process that does the work while the program starts:
writing the files, scaling the icon, running the host's cache tools, notifying.
Nothing of it reaches the terminal without FIM_DEBUG.

    setup.py    the desktop JSON and the icon, checked (fim-desktop setup, fim build)
    layout.py   what is installed where, with which content
    png.py      PNG check, decode, scale, encode (standard library only)
    install.py  install, refresh, clean; the records; the lock
    notify.py   the notification
"""

from __future__ import annotations

import os

from fim.runtime.errors import debug, debug_enabled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional, Sequence

    from fim.runtime.image.file import ImageFile
    from fim.runtime.image.settings import Desktop


# Seconds the background waits before its work: a notification or menu entry a
# moment later is not seen as late; a start slowed by it would be.
START_GRACE = 0.3


def data_home(environ: Mapping[str, str]) -> Optional[str]:
    """$XDG_DATA_HOME, else $HOME/.local/share (the base directory specification: a
    relative value is ignored); None without either, and then nothing is integrated."""
    xdg = environ.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.normpath(xdg)
    home = environ.get("HOME", "")
    if home and os.path.isabs(home):
        return os.path.join(os.path.normpath(home), ".local", "share")
    return None


def recorded_stamp(root: str, build_id: str) -> str:
    """The first line of the image's record ("" when there is none): one open and read."""
    try:
        fd = os.open(os.path.join(root, "fim", "desktop", build_id + ".installed"),
                     os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        head = os.read(fd, 8192)
    finally:
        os.close(fd)
    return head.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")


def run_tool(argv: Sequence[str], environ: Mapping[str, str], verbose: bool,
             seconds: float) -> int:
    """Run a host tool of the background work (a cache tool, notify-send): its output
    where ours goes with FIM_DEBUG, else nowhere; its exit code, -1 when it could not
    start or ran past `seconds`. Through process.spawn: the background's own CPU time
    competes with the program's start, and Python's process module alone would cost
    milliseconds of it to import."""
    from fim.runtime import process
    from fim.runtime.errors import FimError

    try:
        # Our descriptors as they are, not reopened: /dev/stderr is the caller's pipe,
        # which another identity (runuser) may not open.
        pid = process.spawn(argv, environ, None if verbose else os.devnull)
    except FimError:
        return -1
    code = process.wait_within(pid, seconds)
    return -1 if code is None else code


def on_start(image: ImageFile, environ: Mapping[str, str]) -> None:
    """Before a run: refresh the integration if it is stale and send the notification,
    both in the background. Never raises, never waits for the work."""
    try:
        from fim.runtime.image.settings import DESKTOP, NOTIFY

        problems: list = []
        notify = image.read_or(NOTIFY, problems) == 1
        desktop: Optional[Desktop] = image.read_or(DESKTOP, problems)
        if desktop is None and not notify:
            return  # most images: two reads of the open image, nothing else
        verbose = debug_enabled(environ)
        root = data_home(environ)
        stale = False
        if root is not None and desktop is not None:
            from fim.runtime.desktop import stamp

            stale = stamp.of(image, desktop) != recorded_stamp(root, image.header.build_id)
        elif root is None:
            debug(verbose, "Desktop: neither XDG_DATA_HOME nor HOME is set: no integration")
        debug(verbose, f"Desktop: integration {'stale' if stale else 'up to date'}"
              f"{', notification on' if notify else ''}")
        if stale or notify:
            from fim.runtime import process

            process.detach(lambda: _background(image, environ, root, desktop, stale, notify,
                                               verbose), image.fd)
    except Exception as e:  # noqa: BLE001 - the program starts whatever happens here
        debug(debug_enabled(environ), f"Desktop: not integrated ({type(e).__name__}: {e})")


def _quiet(verbose: bool) -> None:
    """The background's descriptors: nothing on the terminal without FIM_DEBUG, and
    none of the caller's pipes held open (a caller reading our output until its end
    would wait for the background work)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0,) if verbose else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _background(image: ImageFile, environ: Mapping[str, str], root: Optional[str],
                desktop: Optional[Desktop], stale: bool, notify: bool, verbose: bool) -> int:
    try:
        from fim.runtime import process

        # Which image's work this is, in ps (the full path: two images may share a name).
        process.set_title([image.path, "fim-desktop", "background"])
        _quiet(verbose)
        # The program's own start comes first: niced, and after its first moments (on
        # two cores the background's CPU cost 4-8 ms of a 50 ms start without them).
        os.nice(10)
        import time

        time.sleep(START_GRACE)
        from fim.runtime.desktop import install, layout

        say = install.Say(verbose)
        if stale and root is not None:
            install.refresh(image, root, desktop, environ, say)
        if notify:
            from fim.runtime.desktop import notify as notification

            name = desktop.name if desktop is not None else os.path.basename(image.path)
            icon = None
            if root is not None and desktop is not None and "ICON" in desktop.integrations:
                from fim.runtime.image.settings import ICON

                stored = image.read_or(ICON, [])
                if stored is not None:
                    icon = os.path.join(root, layout.notify_icon(desktop.name, stored.kind))
            notification.send(name, icon, environ, say, verbose)
    except BaseException as e:  # noqa: BLE001 - a background process shows no traceback
        debug(verbose, f"Desktop: {type(e).__name__}: {e}")
        return 1
    return 0

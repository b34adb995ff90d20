"""One unwind stack: everything an instance sets up, undone in reverse on every path.

Each mount, daemon, lock and temporary directory is pushed the moment it
exists, with the call that undoes it; closing the stack runs those calls in
reverse order, every one of them even when some fail. A small class rather
than contextlib.ExitStack: contextlib imports collections and functools, and
this sits on the start-up path of every run.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Callable, List, Optional, Tuple, Type


class Stack:
    __slots__ = ("_undo",)

    def __init__(self) -> None:
        self._undo: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = []

    def push(self, undo: Callable[..., Any], *args: Any) -> None:
        """Remember `undo(*args)`, to run when the stack unwinds."""
        self._undo.append((undo, args))

    def __len__(self) -> int:
        return len(self._undo)

    def close(self) -> None:
        """Undo everything, newest first. Every call runs; the first failure is raised
        once all have run."""
        self.unwind_to(0)

    def unwind_to(self, depth: int) -> None:
        """Undo what was pushed since the stack held `depth` entries (its len then),
        newest first, as `close` does: an attempt given up, the rest kept."""
        first: Optional[BaseException] = None
        undo = self._undo
        while len(undo) > depth:
            call, args = undo.pop()
            try:
                call(*args)
            except BaseException as e:  # noqa: BLE001 - the rest must still be undone
                if first is None:
                    first = e
        if first is not None:
            raise first

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if kind is None:
            self.close()
            return
        # An error is already on its way out: it wins over one made while unwinding.
        try:
            self.close()
        except BaseException:  # noqa: BLE001
            pass

"""Entry of the runtime: argv → one command function → exit code."""

from __future__ import annotations

import os
import sys

from fim.runtime.errors import FimError, error, os_failure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


def main(image: str, args: List[str], dir_global: str, header_block: bytes, fd: int) -> int:
    """Run one command of the image at `image` (open at `fd`, its header block read)."""
    try:
        from fim.runtime import paths, process
        from fim.runtime.commands import COMMANDS, Context
        from fim.runtime.image.file import adopt

        process.set_title([os.path.basename(image)] + args)
        handle = adopt(image, fd, header_block)
        where = paths.of(image, dir_global, handle.header.build_id, os.getpid(), os.environ)
        ctx = Context(handle, where, os.environ)
        if args and args[0].startswith("fim-"):
            entry = COMMANDS.get(args[0])
            if entry is None:
                raise FimError(f"Unknown command: {args[0]}")
            module = __import__(f"fim.runtime.commands.{entry[0]}", fromlist=[entry[1]])
            code: int = getattr(module, entry[1])(ctx, args[1:])
            return code
        from fim.runtime.commands.run import boot

        return boot(ctx, args)
    except FimError as e:
        error(e.message)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except OSError as e:
        error(os_failure(e))
        return 1
    except Exception as e:  # noqa: BLE001 - the user gets one line, never a traceback
        error(f"Internal error: {type(e).__name__}: {e}")
        return 1
    finally:
        with_flush()


def with_flush() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        pass

"""The one exception type users see, and the one line every failure ends in.

Every check on user input (files, settings, checkpoints) raises `RactError` with a message that
names the file, line, field or setting and says what was expected. Everything else that can
stop a job (a full disk, a denied permission, memory, a bug) is turned into one line by
`error_line`, which the command line and the workflow scripts both use.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator


class RactError(Exception):
    """Bad input or an impossible setting, described for the user."""


def check_settings(settings, checks) -> None:
    """Refuse the first failed check of a settings dataclass: each check is (ok, name of the
    setting, what it expects). The message shows the value as a config file gives it (a
    tuple as a list)."""
    for ok, name, expected in checks:
        if not ok:
            value = getattr(settings, name)
            value = list(value) if isinstance(value, tuple) else value
            raise RactError(f"setting {name}: expected {expected}, got {value!r}")


class ModelFailure(RactError):
    """A model that cannot be fit on this data with these settings: a non-finite loss, a matrix
    that is not positive definite, a fit larger than its memory budget. Deterministic, so
    running the same job again fails the same way; the workflow records it for baselines (the
    comparison shows them as failed) instead of stopping the study."""


_WRITING = "ract: while writing "
# torch.save's C++ writer reports a short write as a RuntimeError without an errno:
# "[enforce fail at inline_container.cc:672] . unexpected pos 3136 vs 3030", or
# "PytorchStreamWriter failed writing file ..."; only raised while writing a file.
_SHORT_WRITE = re.compile(r"unexpected pos \d+ vs \d+|failed writing file|file write failed")
# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
_NO_MEMORY = re.compile(r"DefaultCPUAllocator|can't allocate memory|out of memory", re.I)
_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\]\s*[^.]*\.\s*")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Mark any failure inside the block as one while writing `path`, so that `error_line` can
    name the destination (a full disk reported by pandas or torch names no file, or only the
    temporary one)."""
    try:
        yield
    except Exception as exc:
        if _written(exc) is None:
            exc.add_note(f"{_WRITING}{path}")
        raise


def error_line(exc: Exception, traceback_at: str) -> str:
    """The single line `ract: error: ...` that a failure ends in, for stderr and the job log.

    `traceback_at` says where the full traceback of an unexpected exception is (the job's log
    file, or how to get it)."""
    return f"ract: error: {_describe(exc, traceback_at)}"


def _describe(exc: Exception, traceback_at: str) -> str:
    if isinstance(exc, RactError):
        return str(exc)
    written = _written(exc)
    name = written or getattr(exc, "filename", None)  # the destination, not its temporary name
    text = " ".join(str(exc).split())
    if (
        isinstance(exc, OSError)
        and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        or (written is not None and isinstance(exc, RuntimeError) and _SHORT_WRITE.search(text))
    ):
        return "disk full (or quota)" + (f" writing {name}" if name else "")
    if (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or (isinstance(exc, RuntimeError) and _NO_MEMORY.search(text))
    ):
        return "out of memory" + (f": {_ENFORCE.sub('', text)}" if text else "")
    if isinstance(exc, OSError) and exc.strerror:
        # permission denied, file not found, read-only file system...: name the file
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
        return f"{name}: {reason}" if name else reason
    return f"unexpected {type(exc).__name__}: {text} ({traceback_at})"


def _written(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(_WRITING):
            return note[len(_WRITING) :]
    return None

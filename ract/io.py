"""Atomic file output: a reader never sees a half-written file.

Everything `ract` writes goes to a temporary name in the destination folder and is renamed into
place once complete (a rename within one file system is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator

from .errors import RactError, writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise RactError(f"{path}: is a folder; expected the name of a file to write")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def config_dict(cfg) -> dict:
    """Plain-value form of a settings dataclass, for JSON and checkpoints (tuples -> lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj) -> str:
    """`obj` as JSON text. JSON has no NaN or Infinity (Python writes them, strict readers
    refuse the file), so an undefined number, such as the standard error of a mean over one
    user, is written as null."""
    return json.dumps(_null_if_not_finite(obj), indent=2, allow_nan=False) + "\n"


def _null_if_not_finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _null_if_not_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_null_if_not_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json_text(obj))


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)

"""The paths one command is given must not overlap: an output written over an input or over
another output destroys what the user meant to keep (`--out a.pt --history a.pt`, `--resume`
naming the starting checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RactError


def refuse_shared_paths(
    inputs: dict[str, str | os.PathLike | None], outputs: dict[str, str | os.PathLike | None]
) -> None:
    """Refuse an output that names the same file or folder as another option, by option name
    (unset options are None). Paths are compared resolved, so `./x` and `x`, or a symlink and
    its target, are the same path."""
    given = {
        name: Path(value).resolve()
        for name, value in {**outputs, **inputs}.items()
        if value is not None
    }
    for out in filter(given.__contains__, outputs):
        for name, where in given.items():
            if name != out and where == given[out]:
                raise RactError(
                    f"{out} and {name} both name {where}; expected different "
                    f"paths, as writing {out} would replace the other"
                )

"""Progress of a running training stage, for the people waiting on it.

- A log line per epoch with the time elapsed and the ETA: every epoch when epochs take
  `LOG_SECONDS` or more, otherwise at most one every `LOG_SECONDS` (always the first and last).
- The history CSV grows by one whole line per epoch while the stage runs, so a live curve can be
  plotted; each line is one `write` of a complete row, so a reader never sees half a row. When
  the stage ends, the complete history (with its `kept` column) replaces it atomically; a stage
  that fails removes it, as it removes any other output.
- A small JSON beside the history (`<history stem>.progress.json`): stage, epoch, the
  validation metric, elapsed, ETA and state (running, done, failed), which `ract watch` lists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd

from .errors import RactError
from .io import write_csv, write_json
from .resume import Interrupted

log = logging.getLogger("ract.progress")

LOG_SECONDS = 2.0  # shortest interval between two progress lines (and progress files)


def progress_path(history_path) -> Path:
    """Where the progress JSON of the stage writing `history_path` lives."""
    path = Path(history_path)
    return path.with_name(f"{path.stem}.progress.json")


def clock(seconds: float | None) -> str:
    """Seconds as h:mm:ss, '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return str(timedelta(seconds=round(seconds)))


class Progress:
    """The live history, progress file and progress lines of one stage run."""

    def __init__(self, stage: str, n_epochs: int, history_path, metric: str, frame_of):
        self.stage, self.n_epochs, self.metric = stage, n_epochs, metric
        self.history_path, self.json_path = Path(history_path), progress_path(history_path)
        self.frame_of = frame_of  # history rows -> the history DataFrame
        self.t0 = time.monotonic()
        self.first = 1  # first epoch of this run (later after a resume)
        self.shown_at = -math.inf
        self.value = None  # the latest validated value of `metric`
        self.broken = False  # a progress file could not be written (said once, then skipped)
        self.started = False  # nothing is written before the stage's first validation

    @contextlib.contextmanager
    def _best_effort(self):
        """Progress is for people: a progress file that cannot be written (a full disk) is
        said once and skipped; the stage carries on, and its real outputs report the error."""
        try:
            yield
        except (OSError, RactError) as exc:
            if not self.broken:
                log.warning(
                    "progress files beside %s not written: %s",
                    self.history_path,
                    " ".join(str(exc).split()),
                )
            self.broken = True

    def start(self, history: list[dict]) -> None:
        """The history so far (epoch 0, or what a resume point brought back)."""
        self.first = int(history[-1]["epoch"]) + 1
        self.started = True
        for row in history:
            self._note(row)
        with self._best_effort():
            write_csv(self.history_path, self.frame_of(history))
        self._write("running", int(history[-1]["epoch"]))

    def epoch(self, epoch: int, row: dict) -> str | None:
        """Record a finished epoch; returns the progress text when a line is due, else None."""
        self._note(row)
        line = self.frame_of([row]).to_csv(header=False, index=False)
        with self._best_effort():
            fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode())  # one write of a whole line: no torn row
            finally:
                os.close(fd)
        now = time.monotonic()
        if not (epoch in (self.first, self.n_epochs) or now - self.shown_at >= LOG_SECONDS):
            return None
        self.shown_at = now
        done = self._write("running", epoch)
        return (
            f"{epoch}/{self.n_epochs} ({100 * epoch / max(self.n_epochs, 1):.0f}%, "
            f"{clock(done['elapsed_seconds'])} elapsed, ETA {clock(done['eta_seconds'])})"
        )

    def finish(self, kept_epoch: int, kept_row: dict) -> None:
        """The stage is done; its metric is now the kept epoch's."""
        self._note(kept_row)
        self._write("done", self.n_epochs, kept_epoch=kept_epoch)

    def fail(self, exc: BaseException) -> None:
        """The stage ended without a result (an error, or stopped to resume later): no partial
        history is left where a complete one is expected."""
        if not self.started:
            return
        with self._best_effort():
            self.history_path.unlink(missing_ok=True)
        state = "stopped" if isinstance(exc, Interrupted) else "failed"
        self._write(state, None, reason=str(exc) or type(exc).__name__)

    def _note(self, row: dict) -> None:
        value = row.get(self.metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.value = float(value)

    def _write(self, state: str, epoch: int | None, **extra) -> dict:
        elapsed = time.monotonic() - self.t0
        ran = (epoch or 0) - self.first + 1  # epochs of this run so far
        eta = (
            elapsed / ran * (self.n_epochs - epoch)
            if ran > 0 and state == "running"
            else (0.0 if state == "done" else None)
        )
        info = {
            "stage": self.stage,
            "state": state,
            "epoch": epoch,
            "epochs": self.n_epochs,
            "metric": self.metric,
            "value": self.value,
            "elapsed_seconds": elapsed,
            "eta_seconds": eta,
            "updated": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "history": self.history_path.name,
            **extra,
        }
        with self._best_effort():
            write_json(self.json_path, info)
        return info


def read_progress(results_dir) -> list[dict]:
    """Every progress file under `results_dir`, newest path order, with `path` (the history's
    path) added; a running stage whose process on this host is gone reads as 'gone'."""
    found = []
    for path in sorted(Path(results_dir).rglob("*.progress.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or replaced while listing
        info["path"] = str(path.with_name(info.get("history", path.name)))
        if (
            info.get("state") == "running"
            and info.get("host") == socket.gethostname()
            and not _alive(int(info.get("pid", 0)))
        ):
            info["state"] = "gone"
        found.append(info)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def progress_table(rows: list[dict], root) -> pd.DataFrame:
    """What `ract watch` prints: one line per stage run."""

    def metric(r):
        return f"{r['metric']}={r['value']:.4f}" if r.get("value") is not None else ""

    return pd.DataFrame(
        {
            "history": [os.path.relpath(r["path"], root) for r in rows],
            "stage": [r.get("stage") for r in rows],
            "state": [r.get("state") for r in rows],
            "epoch": [
                f"{'?' if r.get('epoch') is None else r['epoch']}/{r.get('epochs')}"
                + (f" (kept {r['kept_epoch']})" if "kept_epoch" in r else "")
                for r in rows
            ],
            "metric": [metric(r) for r in rows],
            "elapsed": [clock(r.get("elapsed_seconds")) for r in rows],
            "eta": [
                clock(r.get("eta_seconds")) if r.get("state") == "running" else "" for r in rows
            ],
            "updated": [
                f"{clock(time.time() - r['updated'])} ago" if "updated" in r else "" for r in rows
            ],
        }
    )

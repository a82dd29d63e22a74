"""Resume points: a training stage that is killed starts again where it stopped.

At the end of an epoch the stage can take a snapshot of everything the next epoch depends on
(model and optimizer states, update counters, the random generators' states, the best model so
far and the history). It is written to disk, atomically, at most every `every` seconds and
whenever the process receives SIGTERM. Epochs of a second or more keep each snapshot in memory,
so SIGTERM stops the stage after the current batch; shorter epochs are finished first. A run
started again with the same settings, data and starting checkpoint loads the file and continues
with the next epoch, so its result is identical to an uninterrupted run.
A resume point from other settings is ignored (and said so), never mixed in.

The file lives outside a workflow rule's declared outputs (Snakemake deletes those when a job
fails) and is removed once the stage has written its checkpoint. It is marked as a resume point
("kind": "resume"); a path that holds anything else is refused before the stage starts, never
overwritten or removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterator

import torch

from .checkpoint import model_states, read_state, write_state
from .errors import RactError
from .formats import CHECKPOINT_FORMAT_VERSION

log = logging.getLogger("ract.resume")

DEFAULT_EVERY = 60.0  # seconds between resume points written to disk
# Epochs at least this long keep an in-memory snapshot each (copying the states costs about 15
# ms on ml-100k's 1.9M-parameter actor, 12% of its 0.12 s epoch); shorter ones take it only
# when it is written.
EAGER_SNAPSHOT_SECONDS = 1.0


class Interrupted(RactError):
    """The stage was asked to stop (SIGTERM); its resume point has been written."""


@contextlib.contextmanager
def sigterm_flag() -> Iterator[Callable[[], bool]]:
    """While active, SIGTERM sets a flag instead of ending the process; yields a function that
    says whether it arrived. Outside the main thread (no signal handling there) it never does."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)


def fingerprint(settings: dict, start_file=None) -> str:
    """Hash of everything a stage's result depends on besides the seed-driven training itself:
    its settings, the model settings, the data hash, and the bytes of its starting checkpoint."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    if start_file is not None:
        with open(start_file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cpu_copy(value):
    """A deep copy with every tensor detached and on the CPU (snapshots must not change when
    training goes on updating the live tensors in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


class ResumePoint:
    """The resume file of one stage run: `load` what a previous run left, `keep` each epoch's
    snapshot, `write` it (by time, or when stopping), `remove` it when the stage is done.

    A snapshot is a dict of tensors and plain values, plus "epoch" and "rows" (lists and dicts
    of numbers and text, stored as JSON)."""

    def __init__(self, path, fingerprint: str, every: float = DEFAULT_EVERY):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every = float(every)
        self.latest: dict | None = None
        self.written_at = time.monotonic()
        self.written_epoch: int | None = None  # epoch of the file on disk, if any
        self.ours = False  # the file on disk is a resume point (found or written), ours to remove

    def load(self) -> dict | None:
        """The snapshot left by a run with the same fingerprint, else None. A file that is not
        a resume point is refused: a mistyped path must not cost a checkpoint or a notebook."""
        if not self.path.exists():
            return None
        keep = (
            "; not overwritten: expected a new resume path, or the resume point a previous "
            "run of this stage wrote"
        )
        try:
            state = read_state(self.path, "resume point")
        except RactError as exc:
            raise RactError(f"{exc}{keep}") from None
        if state.get("kind") != "resume":
            raise RactError(f"{self.path}: a ract checkpoint, not a resume point{keep}")
        self.ours = True
        if state.get("fingerprint") != self.fingerprint:
            log.warning(
                "ignoring resume point %s: it was made with other settings, data or "
                "starting checkpoint; starting the stage afresh",
                self.path,
            )
            return None
        try:
            state = {**state, "rows": json.loads(state.get("rows", "{}"))}
        except ValueError as exc:
            log.warning("ignoring resume point %s: its rows are not JSON (%s)", self.path, exc)
            return None
        self.written_epoch = int(state["epoch"])
        return state

    def keep(self, make_snapshot: Callable[[], dict], now: bool = False) -> None:
        """At the end of an epoch: take its snapshot if `now` or if `every` seconds have passed
        since the last write (then write it); otherwise drop the held one, now stale."""
        due = time.monotonic() - self.written_at >= self.every
        self.latest = make_snapshot() if now or due else None
        if due:
            self.write()

    def write(self) -> None:
        if self.latest is None:
            return
        # the snapshot's "rows" (history and the like) as JSON: plain text survives
        # weights_only loading whatever number types they hold, and costs nothing until now
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "kind": "resume",
            "fingerprint": self.fingerprint,
            **self.latest,
            "rows": json.dumps(self.latest.get("rows", {})),
        }
        write_state(self.path, state)
        self.written_at = time.monotonic()
        self.written_epoch = int(self.latest["epoch"])
        self.ours = True
        log.info("resume point: epoch %d written to %s", self.latest["epoch"], self.path)

    def remove(self) -> None:
        if self.ours:
            self.path.unlink(missing_ok=True)


def snapshot(run, epoch: int) -> dict:
    """Everything the epochs after `epoch` depend on, copied to the CPU. `run` is a stage run
    of `ract.train`: models, optimizers, counters, generators, the best model so far (a dict of
    metric, epoch, models and row) and the history rows."""
    opt = {
        name: cpu_copy(o.state_dict()) if o is not None else None
        for name, o in (("actor_opt", run.actor_opt), ("critic_opt", run.critic_opt))
    }
    best = run.best
    return {
        "epoch": epoch,
        "models": model_states(run.actor, run.critic),
        **opt,
        "updates": run.updates,
        "steps": run.steps,
        "validated_at": run.validated_at,
        "shuffle_gen": run.shuffle_gen.get_state(),
        "noise_gen": run.noise_gen.get_state(),
        "best": {"metric": best["metric"], "epoch": best["epoch"], "models": best["models"]},
        "rows": {"history": list(run.history), "best_row": best["row"]},
    }


def restore(run, state: dict) -> None:
    """Put a `snapshot` back into the live run."""
    models = state["models"]
    run.actor.load_state_dict(models["actor_state"])
    if run.critic is not None:
        run.critic.load_state_dict(models["critic_state"])
    for name in ("actor_opt", "critic_opt"):
        if getattr(run, name) is not None:
            getattr(run, name).load_state_dict(state[name])
    run.updates, run.steps = int(state["updates"]), int(state["steps"])
    run.validated_at = int(state["validated_at"])
    run.shuffle_gen.set_state(state["shuffle_gen"])
    run.noise_gen.set_state(state["noise_gen"])
    rows = state["rows"]
    run.best = {**state["best"], "row": rows["best_row"]}
    run.history = rows["history"]


class StopAndResume:
    """SIGTERM and the resume point (if any) of one stage run, for its epoch loop:

    - `start(run)`: restore the run from a resume point; the epoch it holds, or None;
    - `with epoch(n):` around an epoch's training: stop before it on SIGTERM, or within it
      (`check` after each batch) when the epoch may be dropped; a stop writes the resume point;
    - `end_epoch(n, seconds, run)`: keep the epoch's snapshot; stop here on SIGTERM;
    - `done()`: the stage's checkpoint is written, the resume point goes.

    Without a resume point SIGTERM stops the stage before its next epoch, nothing is kept."""

    def __init__(self, stage: str, point: ResumePoint | None, stop: Callable[[], bool]):
        self.stage, self.point, self.stop = stage, point, stop
        # on a stop, drop the epoch (a snapshot of the last one is at hand) or finish it
        self.abandon_epoch = False

    def start(self, run) -> int | None:
        state = self.point.load() if self.point is not None else None
        if state is None:
            return None
        restore(run, state)
        log.info(
            "%s: resuming after epoch %d from %s", self.stage, state["epoch"], self.point.path
        )
        return int(state["epoch"])

    @contextlib.contextmanager
    def epoch(self, epoch: int) -> Iterator[None]:
        try:
            if self.stop():  # arrived while restoring or during the first validation
                raise Interrupted(f"stopped by SIGTERM before epoch {epoch}")
            yield
        except Interrupted as exc:
            raise self._stopped(exc) from None

    def check(self, where: str) -> None:
        """Within an epoch: stop on SIGTERM if the epoch may be dropped."""
        if self.stop() and self.abandon_epoch:
            raise Interrupted(f"stopped by SIGTERM {where}")

    def end_epoch(self, epoch: int, seconds: float, run) -> None:
        if self.point is None:
            return
        # Epochs long enough for a copy of the states to cost little (< ~2%) keep an in-memory
        # snapshot each, so SIGTERM can drop the running epoch; short ones are finished on
        # SIGTERM and snapshotted then.
        self.abandon_epoch = seconds >= EAGER_SNAPSHOT_SECONDS
        self.point.keep(lambda: snapshot(run, epoch), now=self.abandon_epoch or self.stop())
        if self.stop():
            raise self._stopped(Interrupted(f"stopped by SIGTERM after epoch {epoch}"))

    def done(self) -> None:
        if self.point is not None:
            self.point.remove()

    def _stopped(self, exc: Interrupted) -> Interrupted:
        """Write the resume point (if any) and say where it is."""
        if self.point is None:
            return exc
        self.point.write()
        done = self.point.written_epoch
        where = (
            f"resume point after epoch {done} in {self.point.path}"
            if done is not None
            else "no epoch completed, no resume point"
        )
        return Interrupted(f"{self.stage}: {exc}; {where}; run the same command again to continue")

"""Faults injected on purpose: writers that fail or are killed mid-file, training killed and
resumed, numerical faults. Nothing may be lost, torn or silently wrong."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from ract.io import atomic_path, write_csv


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, pd.DataFrame({"a": [1, 2]}))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("a\n1\n")  # half of a new table
            raise RuntimeError("disk full")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


WRITER = textwrap.dedent("""
    import sys, torch
    from ract.checkpoint import save_checkpoint
    i = 0
    while True:  # ~40 MB checkpoints, rewritten until killed
        models = {"actor_args": {"n_items": 10}, "actor_state": {"w": torch.full((10_000_000,), float(i))},
                  "critic_args": None, "critic_state": None}
        save_checkpoint(sys.argv[1], stage="actor_pretrain", epoch=i, models=models,
                        data_hash="h")
        i += 1
""")


def test_a_reader_never_sees_a_torn_checkpoint_even_when_the_writer_is_killed(tmp_path):
    from ract.checkpoint import read_state
    path = tmp_path / "model.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    seen, deadline = set(), time.monotonic() + 60
    try:
        while len(seen) < 3 and time.monotonic() < deadline:
            if path.exists():
                state = read_state(path)  # raises on a torn or foreign file
                w = state["actor_state"]["w"]
                assert torch.all(w == state["epoch"])  # complete: every value of one write
                seen.add(state["epoch"])
        assert len(seen) >= 3, "the writer did not produce three checkpoints in 60 s"
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # killed wherever it is, possibly mid-write
        writer.wait()
    state = read_state(path)
    assert torch.all(state["actor_state"]["w"] == state["epoch"])
    # a killed writer can leave its temporary behind, but never under the real name
    assert {p.name for p in tmp_path.iterdir()} - {"model.pt"} <= {
        p.name for p in tmp_path.glob(".model.pt.*.tmp")}

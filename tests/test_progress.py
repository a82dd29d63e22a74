"""Progress people can see: a progress line with ETA per epoch when epochs are slow, the history
CSV growing while a stage runs, a progress file per stage that `ract watch` lists, and EASE's
lambda search in the log."""

import json
import logging

import pandas as pd
import pytest

import ract.progress
import ract.train
from ract.baselines import select_ease_lambda
from ract.cli import main
from ract.train import stage_defaults, train_stage

from test_train import small_actor


def train(split, out, epochs=4, **kwargs):
    # every epoch validated: the progress lines show its metric (the actor default is every 10
    # updates)
    cfg = stage_defaults("actor_pretrain", epochs=epochs, batch_size=64, validate_every=0)
    return train_stage(
        split,
        cfg,
        out_checkpoint=out / "a.pt",
        history_path=out / "a.csv",
        actor_cfg=small_actor(split.n_items),
        **kwargs,
    )


def test_slow_epochs_log_every_epoch_with_eta(split, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ract.progress, "LOG_SECONDS", 0.0)  # every epoch counts as slow
    with caplog.at_level(logging.INFO, logger="ract.train"):
        train(split, tmp_path, epochs=4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().split()[1] == "epoch"]
    assert [line.split()[2] for line in lines] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    assert all("elapsed, ETA" in line and "val_ndcg@100=" in line for line in lines[1:])
    assert "ETA 0:00:00" in lines[-1]


def test_fast_epochs_log_the_first_and_last(split, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ract.progress, "LOG_SECONDS", 3600.0)
    with caplog.at_level(logging.INFO, logger="ract.train"):
        train(split, tmp_path, epochs=5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().split()[1] == "epoch"]
    assert [line.split()[2] for line in lines] == ["0/5", "1/5", "5/5"]


def test_history_grows_each_epoch_and_ends_as_before(split, tmp_path, monkeypatch):
    seen = []
    real = ract.progress.Progress.epoch

    def epoch(self, number, row):
        shown = real(self, number, row)
        seen.append(pd.read_csv(tmp_path / "a.csv")["epoch"].tolist())
        return shown

    monkeypatch.setattr(ract.progress.Progress, "epoch", epoch)
    train(split, tmp_path, epochs=3)
    assert seen == [[0, 1], [0, 1, 2], [0, 1, 2, 3]]  # a whole row more after each epoch
    final = pd.read_csv(tmp_path / "a.csv")
    assert list(final.columns) == list(ract.train.HISTORY_COLUMNS)
    assert final["kept"].sum() == 1 and final["stage"].eq("actor_pretrain").all()
    progress = json.loads((tmp_path / "a.progress.json").read_text())
    assert progress["state"] == "done" and progress["epoch"] == progress["epochs"] == 3
    kept = final.loc[final["kept"], "val_ndcg@100"].item()
    assert (
        progress["value"] == pytest.approx(kept)
        and progress["kept_epoch"] == final.loc[final["kept"], "epoch"].item()
    )


def test_a_failed_stage_leaves_no_history_and_says_failed(split, tmp_path):
    from ract.errors import ModelFailure

    cfg = stage_defaults("actor_pretrain", epochs=2, batch_size=64, learning_rate=1e30)
    with pytest.raises(ModelFailure):
        train_stage(
            split,
            cfg,
            out_checkpoint=tmp_path / "a.pt",
            history_path=tmp_path / "a.csv",
            actor_cfg=small_actor(split.n_items),
        )
    assert not (tmp_path / "a.csv").exists()
    assert json.loads((tmp_path / "a.progress.json").read_text())["state"] == "failed"


def test_watch_lists_stages_with_epoch_metric_and_eta(split, tmp_path, capsys):
    train(split, tmp_path / "seed1", epochs=2)
    running = {
        "stage": "finetune",
        "state": "running",
        "epoch": 3,
        "epochs": 50,
        "metric": "val_ndcg@100",
        "value": 0.4321,
        "elapsed_seconds": 30.0,
        "eta_seconds": 470.0,
        "updated": 0,
        "pid": 0,
        "host": "elsewhere",
        "history": "finetune_history.csv",
    }
    (tmp_path / "seed1" / "finetune_history.progress.json").write_text(json.dumps(running))
    assert main(["watch", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seed1/a.csv" in out and "done" in out and "2/2" in out
    line = next(x for x in out.splitlines() if "finetune" in x)
    assert "running" in line and "3/50" in line and "val_ndcg@100=0.4321" in line
    assert "0:07:50" in line  # the ETA


def test_ease_logs_each_lambda_and_the_choice(split, caplog):
    with caplog.at_level(logging.INFO, logger="ract.baselines"):
        _, grid = select_ease_lambda(split, (10, 100))
    text = caplog.text
    for row in grid:
        assert f"lambda {row['lam']:g}: validation NDCG@100 {row['val_ndcg@100']:.4f} (" in text
    assert "EASE: chose lambda" in text

"""The end-to-end benchmark scripts without running them: `benchmarks/peer.py` says what it
would run (and installs nothing), and `benchmarks/validate_every.py` replays the training
loop's validation rule."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_every import replay  # noqa: E402


def run(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_peer_help_and_dry_run_install_and_run_nothing(tmp_path):
    assert run("benchmarks/peer.py", "--help").returncode == 0
    venv = tmp_path / "no-venv"
    r = run(
        "benchmarks/peer.py",
        "--dry-run",
        "--peer-venv",
        str(venv),
        "--work",
        str(tmp_path / "w"),
        "--finetune-epochs",
        "7",
    )
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    config = json.loads(lines["project config fp32"])
    assert json.loads(lines["project config bf16"])["precision"] == "bf16"
    assert config["models"] == [] and config["seeds"] == [1] and config["precision"] == "fp32"
    assert config["datasets"]["ml-100k"]["prepare"]["protocol"] == "weak"
    assert config["stages"]["critic_pretrain"]["min_steps"] == 0
    finetune = json.loads(lines["RecBole finetune"])
    assert finetune["epochs"] == config["stages"]["finetune"]["epochs"] == 7
    assert finetune["stopping_step"] > 7 and finetune["train_neg_sample_args"] is None
    assert "missing" in lines["RecBole's venv"]
    assert not venv.exists() and not (tmp_path / "w").exists()


def test_peer_refuses_a_bad_count_in_one_line():
    r = run("benchmarks/peer.py", "--rounds", "0")
    assert r.returncode == 2 and "--rounds: expected an integer >= 1" in r.stderr


def test_replay_keeps_the_best_of_the_epochs_it_would_validate():
    # two updates an epoch; validation NDCG peaks at epoch 3, which N = 4 does not validate
    history = pd.DataFrame(
        {
            "epoch": range(7),
            "steps": [0, 2, 4, 6, 8, 10, 12],
            "val_ndcg@100": [0.1, 0.2, 0.3, 0.5, 0.4, 0.35, 0.3],
        }
    )
    assert replay(history, 0) == (3, 6)
    assert replay(history, 4) == (4, 3)  # epochs 2, 4, 6 (the last)
    assert replay(history, 100) == (6, 1)  # the last only

"""The benchmark scripts without running them: `benchmarks/peer.py` says what it would run
(and installs nothing), `benchmarks/validate_every.py` replays the training loop's validation
rule, and `benchmarks/memory.py` merges measurements made apart."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory  # noqa: E402
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


def _memory_file(path, sides, command, repeats=()):
    data = {"users": 10, "items": 5}
    path.write_text(
        json.dumps(
            {
                "shapes": {"full": {"data": data, **sides}},
                "commands": [command],
                "stage_repeats": list(repeats),
                "date": command,
                "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "python": "3", "torch": "2"},
                "threads": 2,
            }
        )
    )
    return path


def test_memory_combine_keeps_earlier_stages_and_every_repeat(tmp_path):
    def stage(mib):
        return {"peak_mib": mib, "seconds": 1.0, "phases": {"load": mib}}

    both = {s: stage(100) for s in memory.STAGES}
    first = _memory_file(
        tmp_path / "a.json",
        {
            "recbole": [{"actor_pretrain": stage(900), "critic_pretrain": stage(950)}],
            "ract": [both],
        },
        "first",
        [{"command": "r1", "split": "s", "stage": "critic_pretrain", "runs": [stage(7)]}],
    )
    # a later run of RecBole's finetune stage alone, and of the project's three stages
    later = _memory_file(
        tmp_path / "b.json",
        {"recbole": [{"finetune": stage(990)}], "ract": [{s: stage(200) for s in memory.STAGES}]},
        "second",
        [{"command": "r2", "split": "s", "stage": "critic_pretrain", "runs": [stage(8)]}],
    )
    memory.combine([first, later, first], tmp_path / "out")  # the same file twice: once
    saved = json.loads((tmp_path / "out" / "memory.json").read_text())
    peer, ours = saved["shapes"]["full"]["recbole"], saved["shapes"]["full"]["ract"]
    assert [peer[0][s]["peak_mib"] for s in memory.STAGES] == [900, 950, 990]
    assert [ours[0][s]["peak_mib"] for s in memory.STAGES] == [100, 100, 100]
    assert [r["command"] for r in saved["stage_repeats"]] == ["r1", "r2"]
    assert saved["commands"] == ["first", "second"]
    page = (tmp_path / "out" / "memory.md").read_text()
    assert "| full (10 x 5) | finetune | 990 | 100 | -890 |  |" in page
    assert "peaks 7 MiB" in page and "peaks 8 MiB" in page


def test_memory_page_leaves_a_stage_not_measured_empty(tmp_path):
    only = _memory_file(
        tmp_path / "a.json",
        {"recbole": [{"finetune": {"peak_mib": 990}}], "ract": []},
        "only",
    )
    memory.combine([only], tmp_path / "out")
    page = (tmp_path / "out" / "memory.md").read_text()
    assert "| full (10 x 5) | actor_pretrain |  |  |  |  |" in page
    assert "| full (10 x 5) | finetune | 990 |  |  |  |" in page


def test_measured_processes_wait_as_workflow_jobs(monkeypatch):
    import ract.threads
    from common import phase_env, wait_of

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(ract.threads, "cpus_busy", lambda: False)
    cpus = ract.threads.usable_cpus()
    assert wait_of(phase_env(cpus)) == "spin"  # alone on enough CPUs: the runtime's default
    assert phase_env(cpus + 1)["OMP_WAIT_POLICY"] == "PASSIVE"  # more threads than CPUs
    monkeypatch.setattr(ract.threads, "cpus_busy", lambda: True)
    assert phase_env(1)["OMP_WAIT_POLICY"] == "PASSIVE"  # other work on the machine
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = phase_env(cpus + 1, "/elsewhere")
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["PYTHONPATH"] == "/elsewhere"
    assert env["OMP_NUM_THREADS"] == str(cpus + 1)


def test_memory_refuses_a_recbole_stage_without_its_start_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as stop:
        memory.run_peer(tmp_path / "venv", tmp_path, "full", 2, ("finetune",))
    start = tmp_path / "full" / "peer" / "critic_pretrain" / "RaCT-full-1.pth"
    assert str(stop.value) == f"RecBole's finetune needs {start}; run its earlier stages first"
    assert not (tmp_path / "full" / "peer" / "finetune.log").exists()  # nothing started

"""The Snakemake study on ml-100k (offline source) with tiny schedules: it runs, a second run
does nothing, and a changed finetune setting reruns only finetune and what follows."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"


def tiny_config():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"]["ml-100k"]["offline"] = True
    config["seeds"] = [1]
    config["actor"].update(latent_dimension=32, mlp_hidden_size=[64])
    config["critic"].update(critic_layers=[16, 8])
    config["stages"]["actor_pretrain"]["pretrain_epochs"] = 3
    config["stages"]["critic_pretrain"].update(pretrain_epochs=2, min_steps=0)
    config["stages"]["finetune"]["epochs"] = 2
    return config


def snakemake(workdir, config, *args):
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--configfile",
                           "tiny.yaml", "--cores", "2", *args], cwd=workdir,
                          capture_output=True, text=True)


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", output, flags=re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    r = snakemake(workdir, tiny_config())
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def test_study_writes_checkpoints_metrics_and_table(study):
    seed = study / "results" / "ml-100k" / "seed1"
    for stage in ("actor_pretrain", "critic_pretrain", "finetune"):
        assert (seed / f"{stage}.pt").exists() and (seed / f"{stage}_history.csv").exists()
        assert (study / "logs" / "ml-100k" / "seed1" / f"{stage}.log").stat().st_size > 0
        assert (study / "benchmarks" / "ml-100k" / "seed1" / f"{stage}.tsv").exists()
    table = pd.read_csv(study / "results" / "ml-100k" / "metrics.csv")
    assert set(table["model"]) == {"Mult-VAE", "RaCT"} and set(table["split"]) == {"validation",
                                                                                   "test"}
    assert table["ndcg@100"].between(0, 1).all()
    assert "| test | RaCT | mean |" in (study / "results" / "ml-100k" / "metrics.md").read_text()


def test_second_run_does_nothing(study):
    r = snakemake(study, tiny_config(), "--dry-run")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_finetune_setting_reruns_finetune_onwards_only(study):
    config = tiny_config()
    config["stages"]["finetune"]["learning_rate"] = 1e-5
    r = snakemake(study, config, "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    # finetune, its validation and test evaluation, the summary table, and `all`
    assert jobs == {"train_stage": 1, "evaluate_checkpoint": 2, "summarise_results": 1,
                    "all": 1}, jobs

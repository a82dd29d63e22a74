"""Synthetic data: the shape asked for, a power law in item popularity, a spread of items per
user, the same file from the same seed, files the readers parse, and the workflow source."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ract.cli import main as cli
from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.readers import read_interactions
from ract.data.synthetic import PRESETS, generate, synthesize, synthetic_config, write_synthetic
from ract.errors import RactError
from test_workflow import ROOT, copy_project, planned_jobs, snakemake


def small(**overrides):
    return synthetic_config(
        **{"n_users": 600, "n_items": 120, "n_interactions": 9000, "seed": 7, **overrides}
    )


def test_shape_unique_pairs_and_minimum_per_user():
    cfg = small()
    frame = generate(cfg)
    assert len(frame) == cfg.n_rows == 9000 + 450  # positives plus 5% low-rated rows
    assert not frame.duplicated(["user", "item"]).any()
    assert frame["user"].nunique() == 600 and frame["item"].nunique() == 120
    positive = frame[frame["rating"] > 3.5]
    assert len(positive) == 9000
    assert positive.groupby("user").size().min() == cfg.min_user_items
    assert set(frame.loc[frame["rating"] <= 3.5, "rating"]) <= {0.5, 1, 1.5, 2, 2.5, 3, 3.5}


def test_item_popularity_is_a_power_law_and_users_spread():
    for exponent in (1.0, 0.5):
        cfg = synthetic_config(
            n_users=3000, n_items=400, n_interactions=60000, seed=3, item_exponent=exponent
        )
        frame = generate(cfg)
        counts = np.sort(frame.groupby("item").size().to_numpy())[::-1]
        rank = np.arange(1, len(counts) + 1) + cfg.item_offset
        slope = np.polyfit(np.log(rank[10:]), np.log(counts[10:]), 1)[0]
        # drawing without replacement flattens the head a little
        assert -1.15 * exponent < slope < -0.8 * exponent, (exponent, slope)
    per_user = frame.groupby("user").size()
    assert per_user.std() / per_user.mean() > 0.6  # log-normal spread, not a constant
    assert per_user.max() > 8 * per_user.median()


def test_dense_users_are_drawn_exactly():
    # most users hold more than a quarter of the items: the Gumbel top-k path
    cfg = synthetic_config(
        n_users=40, n_items=30, n_interactions=900, seed=1, low_rating_share=0.2
    )
    frame = generate(cfg)
    assert len(frame) == cfg.n_rows and not frame.duplicated(["user", "item"]).any()
    assert frame.groupby("user").size().max() <= 30


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    a = write_synthetic(small(), tmp_path / "a").read_bytes()
    b = write_synthetic(small(), tmp_path / "b").read_bytes()
    c = write_synthetic(small(seed=8), tmp_path / "c").read_bytes()
    assert a == b and a != c


@pytest.mark.parametrize("fmt", ["ml-csv", "netflix"])
def test_readers_parse_it_and_preparation_keeps_the_shape(tmp_path, fmt):
    cfg = small(format=fmt)
    path = write_synthetic(cfg, tmp_path)
    frame = read_interactions(path, fmt)
    assert len(frame) == cfg.n_rows
    assert (frame["rating"] > 3.5).sum() == cfg.n_interactions
    manifest = prepare_split(frame, PrepareConfig(heldout_users=60), tmp_path / "split")
    assert manifest["n_users"] == cfg.n_users  # binarised and filtered at 5: nobody lost
    assert manifest["n_interactions_kept"] == cfg.n_interactions
    assert manifest["n_items"] <= cfg.n_items


def test_presets_scale_and_refusals():
    cfg = synthetic_config("ml-20m")
    assert (cfg.n_users, cfg.n_items, cfg.n_interactions) == (136_677, 20_108, 10_000_000)
    assert synthetic_config("netflix").format == "netflix"
    tenth = synthetic_config("netflix", scale=0.1, seed=4)
    assert tenth.n_users == round(PRESETS["netflix"]["n_users"] * 0.1)
    assert tenth.n_items == PRESETS["netflix"]["n_items"] and tenth.seed == 4
    with pytest.raises(RactError, match="do not fit in n_users x n_items = 100"):
        synthetic_config(n_users=10, n_items=10, n_interactions=99)
    with pytest.raises(RactError, match="fewer than n_users x min_user_items"):
        synthetic_config(n_users=10, n_items=10, n_interactions=20)
    with pytest.raises(RactError, match="setting n_items: required without a preset"):
        synthetic_config(n_users=10, n_interactions=100)
    with pytest.raises(RactError, match="setting preset: expected one of ml-20m, netflix"):
        synthetic_config("msd")
    with pytest.raises(RactError, match="setting format"):
        small(format="parquet")
    with pytest.raises(RactError, match="setting n_user: unknown"):
        synthetic_config("ml-20m", n_user=5)


def test_cli_writes_a_file_that_prepare_reads(tmp_path, capsys):
    assert (
        cli(
            [
                "synthesize",
                "--preset",
                "ml-20m",
                "--scale",
                "0.002",
                "--seed",
                "2",
                "--out",
                str(tmp_path / "raw"),
            ]
        )
        == 0
    )
    path, fmt = capsys.readouterr().out.strip().split("\t")
    assert fmt == "ml-csv" and Path(path).name == "ratings.csv"
    assert Path(path).read_text().startswith("userId,movieId,rating,timestamp\n")
    assert (
        cli(["prepare", "--input", path, "--format", fmt, "--out", str(tmp_path / "split")]) == 0
    )
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["n_users"] == round(136_677 * 0.002)
    assert cli(["synthesize", "--n-users", "3", "--out", str(tmp_path / "x")]) == 1


def test_synthesize_caches_by_settings(tmp_path):
    path, fmt = synthesize(tmp_path, n_users=50, n_items=40, n_interactions=600)
    other, _ = synthesize(tmp_path, n_users=50, n_items=40, n_interactions=700)
    assert fmt == "ml-csv" and path.parent.parent == tmp_path / "synthetic"
    assert path.parent != other.parent


@pytest.mark.slow  # the workflow run four times
def test_workflow_source_synthetic_obtains_and_prepares(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = {
        "syn": {
            "source": "synthetic",
            "synthetic": {"n_users": 300, "n_items": 80, "n_interactions": 4000, "seed": 5},
            "prepare": {"heldout_users": 30},
        }
    }
    r = snakemake(tmp_path, config, "results/syn/split/manifest.json")
    assert r.returncode == 0, r.stderr[-3000:]
    pointer = json.loads((tmp_path / "data/raw/syn.json").read_text())
    assert pointer["format"] == "ml-csv" and "/synthetic/" in pointer["path"]
    manifest = json.loads((tmp_path / "results/syn/split/manifest.json").read_text())
    assert manifest["n_users"] == 300 and manifest["n_interactions_kept"] == 4000

    # the generator's code is part of the data: an edit regenerates and re-prepares it
    repo = copy_project(tmp_path / "repo")
    target = ["results/syn/split/manifest.json"]
    assert planned_jobs(tmp_path, config, root=repo, targets=target) == {}
    with open(repo / "ract" / "data" / "synthetic.py", "a") as f:
        f.write("\n# an edit\n")
    assert planned_jobs(tmp_path, config, root=repo, targets=target) == {
        "obtain_data": 1,
        "prepare_data": 1,
    }

    config["datasets"]["syn"]["synthetic"] = None
    r = snakemake(tmp_path, config, "--dry-run")
    assert r.returncode != 0
    assert "datasets.syn.synthetic: give a `synthetic:` block" in r.stdout + r.stderr

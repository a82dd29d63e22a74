"""The paper's configurations (configs/*.yaml) and the GPU profile: each config is valid, holds
the paper's settings, runs only its own data set, dry-runs cleanly; and tiny files in each exact
raw format (ML-20M ratings.csv, Netflix mv_*.txt and combined_data_*.txt, MSD
train_triplets.txt) go through the same preparation code with the config's filters."""

import hashlib
import math
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.readers import read_interactions
from ract.data.sources import DATASETS
from ract.paper import PAPER_SIZES, REPORTED

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
GPU_PROFILE = ROOT / "workflow/profiles/gpu"
NAMES = ["ml-20m", "netflix", "msd"]
FORMATS = {"ml-20m": "ml-csv", "netflix": "netflix", "msd": "msd"}


CONFIG_FILES = sorted((ROOT / "configs").glob("*.yaml"))


def load(name):
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


def snakemake(workdir, config, *args, timeout=120):
    """Run the workflow in `workdir` with `config` as the whole study. config.yaml (ml-100k) is
    copied there so that the test also proves it is replaced, not merged."""
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    (workdir / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--configfile", "study.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(out: str) -> dict[str, int]:
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
        if m.group(1) != "total"
    }


# ---- the configurations -----------------------------------------------------------------------


def test_every_paper_data_set_has_a_config():
    assert set(NAMES) <= {p.stem for p in CONFIG_FILES}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_validates(path):
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("name", NAMES)
def test_paper_config_names_its_paper_data_set(name):
    config = load(name)
    assert list(config["datasets"]) == [name]  # one data set: one study per file
    entry = config["datasets"][name]
    assert entry["paper"] == name and name in REPORTED
    assert entry["source"] == name and DATASETS[name].format == FORMATS[name]


@pytest.mark.parametrize("name", NAMES)
def test_config_holds_the_paper_settings(name):
    """SPEC sections 1-4, and the critic's update floor never overrides the paper's 50 epochs."""
    config = load(name)
    prepare = config["datasets"][name]["prepare"]
    expected = {
        "ml-20m": (3.5, 5, 0, 10_000),
        "netflix": (3.5, 5, 0, 40_000),
        "msd": (None, 20, 200, 50_000),
    }[name]
    assert (
        prepare["rating_threshold"],
        prepare["min_user_count"],
        prepare["min_item_count"],
        prepare["heldout_users"],
    ) == expected
    assert prepare["protocol"] == "strong" and prepare["heldout_proportion"] == 0.2
    actor, stages = config["actor"], config["stages"]
    assert (actor["mlp_hidden_size"], actor["latent_dimension"]) == ([600], 200)
    assert actor["anneal_cap"] == (0.1 if name == "msd" else 0.2)
    assert (stages["actor_pretrain"]["learning_rate"], stages["actor_pretrain"]["batch_size"]) == (
        1e-3,
        500,
    )
    critic = stages["critic_pretrain"]
    assert (critic["epochs"], critic["learning_rate"]) == (50, 1e-4)
    assert stages["finetune"]["learning_rate"] == 2e-6
    training_users = PAPER_SIZES[name]["users"] - 2 * prepare["heldout_users"]
    assert critic["min_steps"] < critic["epochs"] * training_users / critic["batch_size"]
    assert config["evaluate"]["ks"] == [20, 50, 100]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_dry_runs_its_data_sets_only(tmp_path, path):
    config = yaml.safe_load(path.read_text())
    r = snakemake(tmp_path, config, "--replace-workflow-config", "--dry-run", "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    jobs = job_counts(out)
    datasets, seeds = list(config["datasets"]), len(config["seeds"])
    assert jobs["prepare_data"] == jobs["compare"] == len(datasets)
    # a sweep multiplies each stage by its distinct settings: actor 2, critic 4, finetune 8
    # in ml-100k-choose-defaults.yaml
    grid = {
        section: math.prod(len(v) for v in keys.values())
        for section, keys in config.get("sweep", {}).items()
    }
    actor = grid.get("actor", 1) * grid.get("actor_pretrain", 1)
    critic = actor * grid.get("critic", 1) * grid.get("critic_pretrain", 1)
    runs = seeds * len(datasets)
    assert (jobs["actor_pretrain"], jobs["critic_pretrain"], jobs["finetune"]) == (
        actor * runs,
        critic * runs,
        critic * grid.get("finetune", 1) * runs,
    )
    assert all(f"results/{name}/comparison.csv" in out for name in datasets)
    assert "ml-100k" in datasets or "ml-100k" not in out  # config.yaml replaced, not merged


@pytest.mark.parametrize("name", NAMES)
def test_config_dry_runs_with_a_raw_file_path(tmp_path, name):
    """The other way to point at the data: `path` and `format` instead of `source`."""
    raw = tmp_path / "raw"
    WRITERS[name](raw)
    config = load(name)
    entry = config["datasets"][name]
    entry.update(source=None, path=str(raw / RAW_FILE[name]), format=FORMATS[name])
    r = snakemake(tmp_path, config, "--replace-workflow-config", "--dry-run", "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = job_counts(r.stdout + r.stderr)
    assert "obtain_data" not in jobs and jobs["prepare_data"] == 1


def test_gpu_profile_claims_the_gpu_for_every_torch_job(tmp_path):
    rules_with_gpu = set()
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            if "gpu=uses_gpu()" in block:
                rules_with_gpu.add(block.split(":", 1)[0].strip())
    profile = yaml.safe_load((GPU_PROFILE / "config.yaml").read_text())
    claimed = {rule for rule, res in profile["set-resources"].items() if res.get("gpu") == 1}
    assert rules_with_gpu and rules_with_gpu <= claimed
    assert profile["resources"] == {"gpu": 1} and profile["replace-workflow-config"] is True

    r = snakemake(tmp_path, load("ml-20m"), "--profile", str(GPU_PROFILE), "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "ml-100k" not in out  # the profile replaces config.yaml
    checked = 0
    for job in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", job.strip())
        if rule and rule.group(1) in rules_with_gpu:
            assert "gpu=1" in job, job
            checked += 1
    assert checked >= 3 * len(load("ml-20m")["seeds"])  # at least the three training stages


# ---- tiny files in each exact raw format ------------------------------------------------------
# Each writer returns the (user, item, value) rows it wrote, so expectations are computed here
# from the rows, independently of the readers and of ract.data.prepare.


def write_ml20m(folder: Path):
    """ratings.csv of ml-20m: header, half-star ratings, Unix timestamps."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for user in range(1, 41):
        for movie in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 318, 593, 2571, 131262):
            if (user * movie) % 3 != 0:
                # 0.5 to 5 stars, some users generous: 3.5 is dropped, 4 kept (> 3.5)
                rows.append(
                    (user, movie, min(5.0, 1.0 + 0.5 * (user % 6 + (user * 3 + movie) % 5)))
                )
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{m},{r:.1f},{1112486027 + 37 * i}" for i, (u, m, r) in enumerate(rows)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return rows


def netflix_rows():
    rows = []
    for movie in range(1, 13):
        for k in range(30):
            customer = 1488844 + 7919 * k
            if (k + movie) % 4 != 0:
                rows.append((customer, movie, min(5, 1 + k % 4 + (k * movie) % 3)))
    return rows


def netflix_block(movie, rows):
    lines = [f"{movie}:"]
    lines += [f"{c},{r},2005-{1 + c % 12:02d}-{1 + c % 28:02d}" for c, m, r in rows if m == movie]
    return "\n".join(lines) + "\n"


def write_netflix(folder: Path):
    """The Prize layout: training_set/mv_0000001.txt ..., each opening with its 'movie:' line."""
    rows = netflix_rows()
    (folder / "training_set").mkdir(parents=True, exist_ok=True)
    for movie in sorted({m for _, m, _ in rows}):
        (folder / "training_set" / f"mv_{movie:07d}.txt").write_text(netflix_block(movie, rows))
    return rows


def write_netflix_combined(folder: Path, files: int):
    """Kaggle's layout: the same ratings in combined_data_1.txt ..., one 'movie:' block after
    another, the movies shared out over `files` files in order."""
    rows = netflix_rows()
    folder.mkdir(parents=True, exist_ok=True)
    movies = sorted({m for _, m, _ in rows})
    per_file = -(-len(movies) // files)
    for part in range(files):
        chunk = movies[part * per_file : (part + 1) * per_file]
        (folder / f"combined_data_{part + 1}.txt").write_text(
            "".join(netflix_block(m, rows) for m in chunk)
        )
    return rows


def song(name: str) -> str:
    return "SO" + hashlib.sha1(name.encode()).hexdigest()[:16].upper()


def write_msd(folder: Path):
    """train_triplets.txt: tab-separated (user SHA-1, song id, play count), grouped by user.
    Built for the paper's filters (songs >= 200 users first, then users >= 20 songs): 25
    popular songs; one song with 199 listeners (dropped) and one with 200 (kept); users 220-229
    with 10 songs (dropped); users 230-239 with 15 popular and 10 rare songs: 25 songs before
    the song filter, 15 after, so dropped only because songs are filtered first."""
    popular = [song(f"popular{i}") for i in range(25)]
    rare = [song(f"rare{i}") for i in range(10)]
    rows = []
    for u in range(240):
        user = hashlib.sha1(f"user{u}".encode()).hexdigest()
        songs = popular if u < 220 else popular[:10] if u < 230 else popular[:15] + rare
        songs = songs + [song("b199")] * (u < 199) + [song("b200")] * (u < 200)
        rows += [(user, s, 1 + (u * 31 + i * 17) % 50) for i, s in enumerate(songs)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_triplets.txt").write_text("".join(f"{u}\t{s}\t{c}\n" for u, s, c in rows))
    return rows


WRITERS = {"ml-20m": write_ml20m, "netflix": write_netflix, "msd": write_msd}
RAW_FILE = {"ml-20m": "ratings.csv", "netflix": ".", "msd": "train_triplets.txt"}


def expected_after_filters(rows, prepare):
    """(users, items, interactions) kept by the paper's filters, computed from the rows."""
    threshold = prepare["rating_threshold"]
    pairs = {(u, i) for u, i, r in rows if threshold is None or r > threshold}
    items = {}
    for u, i in pairs:
        items.setdefault(i, set()).add(u)
    pairs = {(u, i) for u, i in pairs if len(items[i]) >= prepare["min_item_count"]}
    users = {}
    for u, i in pairs:
        users.setdefault(u, set()).add(i)
    pairs = {(u, i) for u, i in pairs if len(users[u]) >= prepare["min_user_count"]}
    return len({u for u, _ in pairs}), len({i for _, i in pairs}), len(pairs)


def tiny_prepare(name, heldout_users=3):
    """The config's preparation settings, except a held-out count that fits a tiny file."""
    return {**load(name)["datasets"][name]["prepare"], "heldout_users": heldout_users}


@pytest.mark.parametrize("name", NAMES)
def test_tiny_raw_file_prepares_with_the_paper_filters(tmp_path, name):
    rows = WRITERS[name](tmp_path / "raw")
    prepare = tiny_prepare(name, heldout_users=20 if name == "msd" else 3)
    users, items, interactions = expected_after_filters(rows, prepare)
    assert 0 < users < len({r[0] for r in rows})  # the user filter removes some, not all

    frame = read_interactions(tmp_path / "raw" / RAW_FILE[name], FORMATS[name])
    assert len(frame) == len(rows)
    manifest = prepare_split(frame, PrepareConfig(**prepare), tmp_path / "split")
    assert (manifest["n_users"], manifest["n_interactions_kept"]) == (users, interactions)
    assert manifest["n_items"] <= items  # items of held-out users only may drop out
    held = manifest["matrices"]
    assert (
        held["validation_input"]["users"]
        == held["test_input"]["users"]
        == prepare["heldout_users"]
    )
    if name == "msd":
        # 25 popular songs and the one with exactly 200 listeners; users 0-219 with 25-27 each
        assert (users, items, interactions) == (220, 26, 220 * 25 + 200)


def test_netflix_prize_files_and_kaggle_files_give_the_same_split(tmp_path):
    prepare = PrepareConfig(**tiny_prepare("netflix"))
    write_netflix(tmp_path / "prize")
    write_netflix_combined(tmp_path / "kaggle", files=2)
    write_netflix_combined(tmp_path / "one", files=1)
    hashes = {
        prepare_split(read_interactions(raw, "netflix"), prepare, tmp_path / f"split{i}")[
            "content_hash"
        ]
        for i, raw in enumerate(
            [tmp_path / "prize", tmp_path / "kaggle", tmp_path / "one" / "combined_data_1.txt"]
        )
    }
    assert len(hashes) == 1


@pytest.mark.parametrize("name", NAMES)
def test_prepare_data_rule_on_tiny_raw_files(tmp_path, name):
    """The workflow's own route: Netflix and MSD as `source:` with the files placed in
    data/raw/<name>/ (obtain_data finds them), ML-20M through `path:` (its source downloads)."""
    config = load(name)
    entry = config["datasets"][name]
    prepare = tiny_prepare(name, heldout_users=20 if name == "msd" else 3)
    entry["prepare"] = prepare
    if name == "ml-20m":
        rows = write_ml20m(tmp_path / "elsewhere")
        entry.update(
            source=None, path=str(tmp_path / "elsewhere" / "ratings.csv"), format="ml-csv"
        )
    else:
        rows = WRITERS[name](tmp_path / "data" / "raw" / name)
    r = snakemake(
        tmp_path,
        config,
        "--replace-workflow-config",
        "--cores",
        "1",
        f"results/{name}/split/manifest.json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / f"results/{name}/split/manifest.json").read_text())
    users, _, interactions = expected_after_filters(rows, prepare)
    assert (manifest["n_users"], manifest["n_interactions_kept"]) == (users, interactions)
    assert manifest["format"] == FORMATS[name] and manifest["dataset"] == name
    assert manifest["settings"]["min_item_count"] == prepare["min_item_count"]
    if name != "ml-20m":  # fewer rows than the documented full release: a warning, not a stop
        log = (tmp_path / f"logs/{name}/obtain_data.log").read_text()
        assert f"{len(rows):,} interactions, the documented full release" in log


@pytest.mark.parametrize("name", ["netflix", "msd"])
def test_missing_raw_files_stop_with_instructions(tmp_path, name):
    r = snakemake(
        tmp_path, load(name), "--replace-workflow-config", "--cores", "1", f"data/raw/{name}.json"
    )
    assert r.returncode != 0
    log = (tmp_path / f"logs/{name}/obtain_data.log").read_text()
    assert f"dataset {name!r}: no " in log and f"data/raw/{name}" in log
    assert ("millionsongdataset.com/tasteprofile" if name == "msd" else "Kaggle") in log
    assert f"`path:` with `format: {name}`" in log

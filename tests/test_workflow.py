"""The Snakemake study on ml-100k (offline source) with tiny schedules: it runs end to end, a
second run does nothing, each kind of change reruns exactly the jobs it should, schema errors
stop the run before any job, and a sweep shares the stages it does not touch."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
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
    config["stages"]["actor_pretrain"]["epochs"] = 3
    config["stages"]["critic_pretrain"].update(epochs=2, min_steps=0)
    config["stages"]["finetune"]["epochs"] = 2
    config["baselines"]["mult_dae"].update(latent_dimension=16, epochs=3)
    config["baselines"]["ease"]["lambdas"] = [100, 500]
    return config


def snakemake(workdir, config, *args, root=ROOT):
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [
            SNAKEMAKE,
            "--snakefile",
            str(root / "Snakefile"),
            "--configfile",
            "tiny.yaml",
            "--cores",
            "2",
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    )


def planned_jobs(workdir, config, root=ROOT, targets=()) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table ({} when there is nothing to do)."""
    r = snakemake(workdir, config, "--dry-run", *targets, root=root)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    print(out)  # shown by pytest when a test fails: Snakemake's reason for each planned job
    table = out.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in out else ""
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
        if m.group(1) != "total"
    }


def copy_project(repo):
    """A copy of the workflow and the ract package it imports (from beside its Snakefile), to
    edit in a test."""
    repo.mkdir(parents=True)
    for part in ("Snakefile", "config.yaml", "workflow", "ract"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, repo / part)
    return repo


@pytest.fixture(scope="module")
def study(tmp_path_factory, download_cache):
    workdir = tmp_path_factory.mktemp("study")
    download_cache(workdir / "data" / "raw")
    r = snakemake(workdir, tiny_config())
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def test_study_writes_checkpoints_metrics_table_and_figures(study):
    run = study / "results" / "ml-100k" / "main" / "seed1"
    for stage in ("actor_pretrain", "critic_pretrain", "finetune"):
        assert (run / f"{stage}.pt").exists() and (run / f"{stage}_history.csv").exists()
        assert (study / "logs/ml-100k/main/seed1" / f"{stage}.log").stat().st_size > 0
        assert (study / "benchmarks/ml-100k/main/seed1" / f"{stage}.tsv").exists()
    for stage in ("actor_pretrain", "finetune"):
        for split in ("validation", "test"):
            assert (run / "eval" / f"{stage}_{split}_summary.json").exists()
    table = pd.read_csv(study / "results/ml-100k/comparison.csv")
    assert set(table["model"]) == {
        "Mult-VAE",
        "RaCT",
        "NLL finetune (control)",
        "Mult-DAE",
        "RaCT (Mult-DAE actor)",
        "EASE",
        "Popularity",
    }
    test = table[table["split"] == "test"].set_index("model")["ndcg@100"]
    assert test["EASE"] > test["Popularity"]  # EASE needs no training epochs to beat it
    tests = json.loads((study / "results/ml-100k/significance.json").read_text())["tests"]
    assert [(t["a"], t["b"]) for t in tests] == [
        ("Mult-VAE", "RaCT"),
        ("NLL finetune (control)", "RaCT"),
        ("Mult-DAE", "RaCT (Mult-DAE actor)"),
    ]
    n_test = len(pd.read_csv(run / "eval/finetune_test_per_user.csv"))
    for t in tests:
        assert t["n"] == n_test and 0 <= t["wilcoxon_pvalue"] <= 1
        assert t["boot_low"] <= t["mean_diff"] <= t["boot_high"]
        assert t["verdict"] in ("better", "worse", "no detectable difference")
    assert set(table["split"]) == {"validation", "test"}
    assert table["ndcg@100"].between(0, 1).all()
    md = (study / "results/ml-100k/comparison.md").read_text()
    assert "| test | RaCT |" in md and "critic r (validation users)" in md
    assert "Pearson r with the true NDCG@100: critic" in md
    assert "**RaCT − NLL finetune (control)**" in md and "Verdict: **" in md
    fit = pd.read_csv(run / "eval/critic_pretrain_validation_critic_fit.csv")
    assert len(fit) == len(pd.read_csv(run / "eval/finetune_validation_per_user.csv"))
    assert {"ndcg@100", "critic", "nll", "slope"} <= set(fit.columns)
    for fig in ("training_curves", "metrics", "gain_by_activity", "critic_fit"):
        for ext in ("png", "pdf"):
            assert (study / f"results/ml-100k/figures/{fig}.{ext}").stat().st_size > 1000
    pointer = json.loads((study / "data/raw/ml-100k.json").read_text())
    assert pointer["format"] == "recbole" and (study / pointer["path"]).exists()


def test_second_run_does_nothing(study):
    assert planned_jobs(study, tiny_config()) == {}


def chromium():
    """A Chromium to drive: the system's (Debian: `apt-get install chromium`), since
    `playwright install` downloads its own from the internet."""
    return next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )


def test_report_shows_table_verdicts_and_config_in_a_browser(study, tmp_path):
    """What a reader of `snakemake --report` sees in headless Chromium: the landing text names
    the config file used, entries go by label, the comparison page shows the table and the
    verdicts, captions hold no mailto link. Keeps a screenshot in tests/artifacts/."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
    )
    browser_path = chromium()
    if browser_path is None:
        pytest.skip(
            "no Chromium found (Debian: apt-get install chromium); the report was not "
            "checked in a browser"
        )
    report = tmp_path / "report.html"
    r = snakemake(study, tiny_config(), "--report", str(report))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mailto:" not in report.read_text()  # the report embeds every caption
    first = json.loads((study / "results/ml-100k/significance.json").read_text())["tests"][0]
    verdict = {
        "better": f"{first['b']} better than {first['a']}",
        "worse": f"{first['b']} worse than {first['a']}",
    }.get(first["verdict"], first["verdict"])
    artifacts = ROOT / "tests/artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(report.as_uri())
        landing = page.get_by_text("for every data set and seed in")
        sync_api.expect(landing).to_contain_text("in tiny.yaml.")
        page.get_by_text("Results", exact=True).click()
        entry = page.locator("tr", has_text="models compared, paired tests")
        sync_api.expect(entry).to_be_visible()
        entry.locator("a[iconname=eye]").click()  # show it
        shown = page.frame_locator("iframe")
        for cell in ("RaCT", "Mult-VAE", "NLL finetune (control)", "EASE"):
            sync_api.expect(shown.get_by_role("cell", name=cell, exact=True).first).to_be_visible()
        pair = shown.locator("li").filter(has_text=f"{first['b']} − {first['a']}, test")
        sync_api.expect(pair).to_be_visible()
        sync_api.expect(pair).to_contain_text(f"Verdict: {verdict}.")
        page.screenshot(path=artifacts / "report.png")
        entry.locator("a[iconname=information-circle]").click()  # its caption
        sync_api.expect(page.get_by_text("test Recall@20, Recall@50 and NDCG@100")).to_be_visible()
        assert page.locator("a[href^='mailto:']").count() == 0
        browser.close()


def test_reordering_config_keys_is_not_a_change(study):
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    assert planned_jobs(study, reverse(tiny_config())) == {}


def test_recboles_name_for_epochs_is_the_same_setting(study):
    # config.yaml says `epochs`; a later file saying `pretrain_epochs` (RecBole's name) wins
    config = tiny_config()
    aliased = [config["stages"]["actor_pretrain"], config["stages"]["critic_pretrain"]]
    for section in [*aliased, config["baselines"]["mult_dae"]]:
        section["pretrain_epochs"] = section.pop("epochs")
    assert planned_jobs(study, config) == {}
    config["stages"]["actor_pretrain"]["pretrain_epochs"] += 1
    assert planned_jobs(study, config)["actor_pretrain"] == 1


def change(section_path, key, value):
    config = tiny_config()
    target = config
    for part in section_path:
        target = target[part]
    target[key] = value
    return config


DOWNSTREAM_OF_CRITIC = {
    "critic_pretrain": 1,
    "critic_fit": 1,
    "finetune": 1,
    "ract_dae_critic": 1,
    "ract_dae": 1,
    "evaluate": 2,
    "compare": 1,
    "all": 1,
}
DOWNSTREAM_OF_ACTOR = {
    "actor_pretrain": 1,
    "critic_pretrain": 1,
    "critic_fit": 1,
    "finetune": 1,
    "nll_finetune": 1,
    "evaluate": 3,
    "compare": 1,
    "all": 1,
}
DOWNSTREAM_OF_MULT_DAE = {
    "mult_dae": 1,
    "ract_dae_critic": 1,
    "ract_dae": 1,
    "evaluate": 2,
    "compare": 1,
    "all": 1,
}
BASELINES_FROM_SPLIT = {
    "mult_dae": 1,
    "fit_ease": 1,
    "fit_popularity": 1,
    "evaluate_baseline": 2,
}
# every model trained per seed: Mult-VAE, RaCT and its critic, the control, RaCT on Mult-DAE
PER_SEED = {
    "actor_pretrain": 1,
    "critic_pretrain": 1,
    "critic_fit": 1,
    "finetune": 1,
    "nll_finetune": 1,
    "ract_dae_critic": 1,
    "ract_dae": 1,
}
RERUNS = {
    # the control arm and RaCT on Mult-DAE run RaCT's finetune schedule
    "finetune setting": (
        change(("stages", "finetune"), "learning_rate", 1e-5),
        {
            "finetune": 1,
            "nll_finetune": 1,
            "ract_dae": 1,
            "evaluate": 3,
            "compare": 1,
            "all": 1,
        },
    ),
    # ... but the control has no critic
    "finetune critic setting": (
        change(("stages", "finetune"), "critic_learning_rate", 1e-5),
        {"finetune": 1, "ract_dae": 1, "evaluate": 2, "compare": 1, "all": 1},
    ),
    "critic setting": (change(("critic",), "critic_layers", [8]), DOWNSTREAM_OF_CRITIC),
    "critic stage setting": (
        change(("stages", "critic_pretrain"), "learning_rate", 1e-3),
        DOWNSTREAM_OF_CRITIC,
    ),
    "actor setting": (
        change(("actor",), "dropout_prob", 0.4),
        DOWNSTREAM_OF_ACTOR,
    ),
    "Mult-DAE setting": (
        change(("baselines", "mult_dae"), "l2_penalty", 1e-4),
        DOWNSTREAM_OF_MULT_DAE,
    ),
    # how often a stage validates is one of its settings: it can change the epoch kept
    "actor validation interval": (
        change(("stages", "actor_pretrain"), "validate_every", 10),
        DOWNSTREAM_OF_ACTOR,
    ),
    "Mult-DAE validation interval": (
        change(("baselines", "mult_dae"), "validate_every", 10),
        DOWNSTREAM_OF_MULT_DAE,
    ),
    "EASE grid": (
        change(("baselines", "ease"), "lambdas", [200]),
        {"fit_ease": 1, "evaluate_baseline": 1, "compare": 1, "all": 1},
    ),
    "preprocessing setting": (
        change(("datasets", "ml-100k", "prepare"), "min_user_count", 6),
        {
            "prepare_data": 1,
            **PER_SEED,
            "evaluate": 5,
            "compare": 1,
            "all": 1,
            **BASELINES_FROM_SPLIT,
        },
    ),
    "new seed": (
        change((), "seeds", [1, 2]),
        {**PER_SEED, "mult_dae": 1, "evaluate": 5, "compare": 1, "all": 1},
    ),
    "evaluation cut-offs": (
        change(("evaluate",), "ks", [10, 20, 50, 100]),
        {"evaluate": 5, "evaluate_baseline": 2, "compare": 1, "all": 1},
    ),
    "fewer baselines": (change((), "models", ["ease"]), {"compare": 1, "all": 1}),
    "paper to compare with": (
        change(("datasets", "ml-100k"), "paper", "ml-20m"),
        {"compare": 1, "all": 1},
    ),
}


@pytest.mark.parametrize("case", list(RERUNS))
def test_a_change_reruns_only_what_depends_on_it(study, case):
    config, expected = RERUNS[case]
    assert planned_jobs(study, config) == expected


def test_editing_ract_code_reruns_the_stages_using_it(study, tmp_path):
    # The workflow imports ract from beside its Snakefile: edit a copy of the project, and run
    # it on a copy of the study (outputs, times and Snakemake's records).
    repo, work = copy_project(tmp_path / "repo"), tmp_path / "study"
    shutil.copytree(study, work, symlinks=True)
    assert planned_jobs(work, tiny_config(), root=repo) == {}
    with open(repo / "ract" / "model.py", "a") as f:
        f.write("\n# an edit\n")
    # model.py is used by training, evaluation and the baselines, not by data preparation
    assert planned_jobs(work, tiny_config(), root=repo) == {
        **PER_SEED,
        "evaluate": 5,
        "compare": 1,
        "all": 1,
        **BASELINES_FROM_SPLIT,
    }
    # the adapter beside the scripts runs in every job (Snakemake's source_path() would answer
    # with a copy in its source cache, beside which the adapter is not)
    with open(repo / "workflow" / "scripts" / "adapter.py", "a") as f:
        f.write("\n# an edit\n")
    assert planned_jobs(work, tiny_config(), root=repo) == {
        "prepare_data": 1,
        **PER_SEED,
        "evaluate": 5,
        "compare": 1,
        "all": 1,
        **BASELINES_FROM_SPLIT,
    }
    config = tiny_config()
    config["code_hash"] = False  # the documented switch: code edits alone then rerun nothing
    r = snakemake(work, config, "--touch", root=repo)  # (records the changed params once)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(repo / "ract" / "model.py", "a") as f:
        f.write("\n# another edit\n")
    assert planned_jobs(work, config, root=repo) == {}


def test_sweep_shares_untouched_stages_and_picks_the_best(study):
    config = tiny_config()
    config["sweep"] = {"finetune": {"learning_rate": [1e-5, 1e-4]}}
    # two finetunes per seed; actor and critic are the main run's
    assert planned_jobs(study, config) == {"finetune": 2, "evaluate": 2, "sweep": 1, "all": 1}
    r = snakemake(study, config)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(study / "results/ml-100k/sweep.csv")
    assert len(table) == 3 and table["chosen"].sum() == 1
    best = json.loads((study / "results/ml-100k/sweep_best.json").read_text())
    chosen = table[table["chosen"]].iloc[0]
    assert best["variant"] == chosen["variant"] != "main"
    grid = table[table["variant"] != "main"]
    assert chosen["validation ndcg@100 (RaCT)"] == grid["validation ndcg@100 (RaCT)"].max()
    assert set(grid["finetune.learning_rate"].astype(float)) == {1e-5, 1e-4}


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: c["stages"]["finetune"].update(lr=0.1),
            "config: stages.finetune: Additional properties are not allowed ('lr' was unexpected)",
        ),
        (lambda c: c["actor"].update(dropout_prob="half"), "config: actor.dropout_prob: 'half'"),
        (lambda c: c.update(seeds=3), "config: seeds: 3 is not of type 'array'"),
        (
            lambda c: c["datasets"]["ml-100k"].update(source=None),
            "config: datasets.ml-100k: give exactly one of `source`",
        ),
        (
            lambda c: c.update(sweep={"finetune": {"learning_rte": [1e-5]}}),
            "config: sweep.finetune.learning_rte: unknown setting",
        ),
        (
            lambda c: c.update(sweep={"actor": {"dropout_prob": [0.5, 1.5]}}),
            "config: sweep.actor.dropout_prob: 1.5",
        ),
        (
            lambda c: c.update(models=["ract_dae", "ease"]),
            "config: models: ract_dae finetunes the Mult-DAE actor: add mult_dae too",
        ),
        (
            lambda c: c["stages"]["actor_pretrain"].update(pretrain_epochs=5),
            "config: stages.actor_pretrain: `pretrain_epochs` (RecBole's name) and `epochs` are "
            "one setting: give one",
        ),
        (
            lambda c: c.update(sweep={"critic_pretrain": {"pretrain_epochs": [1], "epochs": [2]}}),
            "config: sweep.critic_pretrain: `pretrain_epochs` (RecBole's name) and `epochs`",
        ),
        (
            lambda c: c["actor"].update(total_anneal_steps="soon"),
            "config: actor.total_anneal_steps: 'soon' is not valid",
        ),
        (
            lambda c: c["stages"]["actor_pretrain"].update(validate_every=-1),
            "config: stages.actor_pretrain.validate_every: -1 is less than the minimum of 0",
        ),
        (
            lambda c: c["baselines"]["mult_dae"].update(validate_every="often"),
            "config: baselines.mult_dae.validate_every: 'often' is not of type 'integer'",
        ),
    ],
)
def test_config_errors_stop_before_any_job(tmp_path, edit, message):
    config = tiny_config()
    edit(config)
    r = snakemake(tmp_path, config)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("cores, policy", [(1, "runtime default"), (4096, "PASSIVE")])
def test_jobs_spin_only_when_their_threads_fit_the_cpus(tmp_path, cores, policy):
    """A job's idle OpenMP threads may spin (the runtime's default) when `--cores` is within the
    machine's CPUs, and sleep at once (PASSIVE) when jobs could share a core."""
    from ract.threads import cpus_busy

    repo = copy_project(tmp_path / "repo")
    probe = repo / "workflow" / "scripts" / "probe.py"
    probe.write_text(
        "from adapter import run  # first, as in every rule script\n"
        "import os\n"
        "value = os.environ.get('OMP_WAIT_POLICY', 'runtime default')\n"
        "open(snakemake.output[0], 'w').write(value)\n"
    )
    with open(repo / "Snakefile", "a") as f:
        f.write('\n\nrule probe:\n    output:\n        "policy.txt",\n')
        f.write('    script:\n        "workflow/scripts/probe.py"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "RACT_OMP_SPIN")}
    busy = cpus_busy()  # other work on the machine: the job sleeps whatever --cores says
    r = subprocess.run(
        [SNAKEMAKE, "--cores", str(cores), "policy.txt"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    if not (busy or cpus_busy()):
        assert (repo / "policy.txt").read_text() == policy
    else:
        assert (repo / "policy.txt").read_text() in (policy, "PASSIVE")


@pytest.mark.parametrize("busy", [False, True])
def test_wait_policy_keeps_the_users_and_defaults_to_passive(monkeypatch, busy):
    from ract import threads

    monkeypatch.setattr(threads, "cpus_busy", lambda: busy)
    for environ, want in (
        ({}, "PASSIVE"),  # outside a workflow run (or one that did not say): sleep at once
        ({"RACT_OMP_SPIN": "0"}, "PASSIVE"),
        # the OpenMP runtime's own default, unless other work keeps the CPUs busy
        ({"RACT_OMP_SPIN": "1"}, "PASSIVE" if busy else None),
        ({"RACT_OMP_SPIN": "1", "OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE"),  # the user's
        ({"RACT_OMP_SPIN": "0", "OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
    ):
        threads.set_wait_policy(environ)
        assert environ.get("OMP_WAIT_POLICY") == want


def test_busy_cpus_are_more_runnable_threads_than_cpus(monkeypatch, tmp_path):
    from ract import threads

    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(threads, "LOADAVG", str(loadavg))
    cpus = os.cpu_count()
    for running, busy in ((cpus, False), (cpus + 1, True)):
        loadavg.write_text(f"4.03 4.40 4.08 {running}/96 32378\n")
        assert threads.cpus_busy(samples=2, interval=0) is busy
    loadavg.write_text("garbled\n")
    assert threads.cpus_busy(samples=2, interval=0) is False  # not said: not busy


def test_what_snakemake_imports_at_parse_time_is_standard_library_only():
    """common.smk's `ract` modules load where only Snakemake is installed: no torch, numpy,
    scipy or pandas."""
    code = (
        "import sys, ract.provenance, ract.formats, ract.memory, ract.threads\n"
        "print(sorted({'torch', 'numpy', 'scipy', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    imported = set(re.findall(r"^(?:import|from) (ract\.\w+)", text, re.M))
    assert imported == {"ract.provenance", "ract.formats", "ract.memory", "ract.threads"}


def test_schema_defaults_equal_the_library_defaults():
    from ract.data.prepare import PrepareConfig
    from ract.evaluate import DEFAULT_KS
    from ract.model import ActorConfig, CriticConfig
    from ract.train import stage_defaults

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]

    def defaults(node):
        return {k: v["default"] for k, v in node["properties"].items()}

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    prepare = props["datasets"]["additionalProperties"]["properties"]["prepare"]
    assert defaults(prepare) == {k: plain(getattr(PrepareConfig(), k)) for k in defaults(prepare)}
    actor = ActorConfig(n_items=1)
    assert defaults(props["actor"]) == {
        k: plain(getattr(actor, k)) for k in defaults(props["actor"])
    }
    assert defaults(props["critic"]) == {
        k: plain(getattr(CriticConfig(), k)) for k in defaults(props["critic"])
    }
    for stage, node in props["stages"]["properties"].items():
        lib = stage_defaults(stage)
        for key, value in defaults(node).items():
            assert value == getattr(lib, key), (
                stage,
                key,
            )
    assert props["evaluate"]["properties"]["ks"]["default"] == list(DEFAULT_KS)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for stage, settings in config["stages"].items():  # config.yaml shows the defaults too
        for key, value in settings.items():
            assert value == defaults(props["stages"]["properties"][stage])[key], (stage, key)


def test_every_training_stage_takes_validate_every():
    """actor_pretrain, critic_pretrain, finetune (and with it the control arm) and Mult-DAE:
    each its own interval in the schema (that each reaches its stage: the reruns above)."""
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]
    sections = [
        *(("stages", stage) for stage in props["stages"]["properties"]),
        ("baselines", "mult_dae"),
    ]
    assert len(sections) == 4
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for top, name in sections:
        assert "validate_every" in props[top]["properties"][name]["properties"], (top, name)
        config[top][name]["validate_every"] = 7
    jsonschema.Draft202012Validator(schema).validate(config)


def test_every_schema_key_has_a_description_and_default():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub and "default" in sub, ".".join(path + [key])
            walk(sub, path + [key])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ["*"])

    walk(schema, [])


def test_failing_job_names_rule_dataset_and_log_and_leaves_no_output(tmp_path):
    (tmp_path / "bad.csv").write_text("user,item,rating\n1,2,5\n1,3,oops\n")
    config = tiny_config()
    config["datasets"] = {"my-data": {"path": str(tmp_path / "bad.csv"), "format": "csv"}}
    r = snakemake(tmp_path, config)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Error in rule prepare_data" in out and "dataset=my-data" in out
    assert "logs/my-data/prepare_data.log" in out
    assert "line 3: rating 'oops' is not a number" in out
    assert (
        "line 3: rating 'oops' is not a number"
        in (tmp_path / "logs/my-data/prepare_data.log").read_text()
    )
    assert not (tmp_path / "results/my-data/split").exists()


def test_failed_baseline_is_shown_as_failed_and_other_data_is_refused(study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    # EASE's memory budget is its job's mem_mb: 1 MB cannot hold a fit on ml-100k's items
    n_items = json.loads((work / "results/ml-100k/split/manifest.json").read_text())["n_items"]
    config = change(("datasets", "ml-100k"), "paper", "ml-20m")  # the paper's table beside ours
    r = snakemake(work, config, "-R", "fit_ease", "--set-resources", "fit_ease:mem_mb=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "EASE could not be fit, recorded as failed" in r.stdout + r.stderr
    table = pd.read_csv(work / "results/ml-100k/comparison.csv")
    ease = table[table["model"] == "EASE"]
    assert len(ease) == 2 and (ease["status"] == "failed").all() and ease["ndcg@100"].isna().all()
    assert (table.loc[table["model"] != "EASE", "status"] == "ok").all()
    md = (work / "results/ml-100k/comparison.md").read_text()
    assert "| test | EASE | 0 | 1 | failed | failed | failed |" in md
    assert f"EASE on {n_items} items needs about" in md
    assert "Against the paper (ml-20m, test users" in md
    assert re.search(r"\| EASE \| 0 \| n/a \| 0\.391 \| n/a \|", md)
    assert re.search(r"\| RaCT \| 1 \| 0\.\d{3} \| 0\.403 \| [+-]0\.\d{3} \|", md)
    assert "Pearson r with the true NDCG@100, ours on validation users / paper on test" in md
    # a summary from another split cannot be compared with the rest
    path = work / "results/ml-100k/baselines/eval/popularity_test_summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, "data_hash": "0" * 64}))
    r = snakemake(work, config, "-R", "compare")
    assert r.returncode != 0
    assert "different splits or data sets and cannot be compared" in r.stdout + r.stderr
    assert "000000000000: results/ml-100k/baselines/eval/popularity_test_summary.json" in (
        r.stdout + r.stderr
    )


def test_fit_ease_asks_for_the_memory_its_items_need(study, tmp_path):
    """fit_ease's mem_mb follows the prepared split: the floor on ml-100k, more with MSD's
    41,140 items (read from the manifest once it exists)."""
    from ract.memory import ease_job_mb

    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    config = tiny_config()
    r = snakemake(work, config, "--dry-run", "-R", "fit_ease")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mem_mb=8000," in r.stdout + r.stderr
    path = work / "results/ml-100k/split/manifest.json"
    manifest = {**json.loads(path.read_text()), "n_items": 41_140}
    path.write_text(json.dumps(manifest))
    r = snakemake(work, config, "--dry-run", "-R", "fit_ease")
    assert r.returncode == 0, r.stderr[-3000:]
    need = ease_job_mb(41_140, manifest["n_interactions_kept"])
    assert need > 15_000 and f"mem_mb={need}," in r.stdout + r.stderr


def test_a_failure_in_compares_fork_fails_the_job_with_its_one_line(study, tmp_path):
    # compare draws the critic's fit in a fork of its process (workflow/scripts/compare.py):
    # what goes wrong there ends the job as it would have in one process
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    fit = work / "results/ml-100k/main/seed1/eval/critic_pretrain_validation_critic_fit.csv"
    fit.write_text("user,x\n1,2\n")
    r = snakemake(work, tiny_config(), "-R", "compare")
    assert r.returncode != 0
    missing = "['ndcg@100', 'critic', 'nll']"
    assert f"ract: error: critic fit: table of seed 1 has no column(s) {missing}" in r.stderr
    assert not (work / "results/ml-100k/comparison.md").exists()


def test_finetuning_that_keeps_the_pretrained_actor_is_said_in_words(study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    r = snakemake(work, change(("stages", "finetune"), "epochs", 0))
    assert r.returncode == 0, r.stderr[-3000:]
    md = (work / "results/ml-100k/comparison.md").read_text()
    assert "- RaCT is Mult-VAE: on validation users no finetune epoch beat" in md
    assert "- RaCT (Mult-DAE actor) is Mult-DAE:" in md
    tests = json.loads((work / "results/ml-100k/significance.json").read_text())["tests"]
    assert tests[0]["mean_diff"] == 0 and tests[0]["verdict"] == "no detectable difference"


# ---- lost files and interrupted jobs never leave stale results -------------------------------

SPLIT_DOWNSTREAM = {
    "prepare_data": 1,
    **PER_SEED,
    "evaluate": 5,
    "compare": 1,
    "all": 1,
    **BASELINES_FROM_SPLIT,
}
LOST = {
    "main/seed1/critic_pretrain.pt": {
        "critic_pretrain": 1,
        "critic_fit": 1,
        "finetune": 1,
        "evaluate": 1,
        "compare": 1,
        "all": 1,
    },
    "main/seed1/actor_pretrain_history.csv": RERUNS["actor setting"][1],
    "main/seed1/eval/finetune_test_summary.json": {"evaluate": 1, "compare": 1, "all": 1},
    "split/train.npz": SPLIT_DOWNSTREAM,
    "split/manifest.json": SPLIT_DOWNSTREAM,
}


@pytest.mark.parametrize("lost", list(LOST))
def test_a_file_deleted_by_hand_is_remade_with_everything_made_from_it(study, tmp_path, lost):
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    (work / "results/ml-100k" / lost).unlink()
    assert planned_jobs(work, tiny_config()) == LOST[lost]
    r = snakemake(work, tiny_config(), "--dry-run")
    assert f"ract: results/ml-100k/{lost} is missing but results made from it exist" in r.stderr


def test_a_deleted_summary_is_remade_and_the_table_follows(study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    summary = work / "results/ml-100k/main/seed1/eval/finetune_test_summary.json"
    before = summary.read_text()
    summary.unlink()
    r = snakemake(work, tiny_config())
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(summary.read_text()) == json.loads(before)
    table = work / "results/ml-100k/comparison.csv"
    assert table.stat().st_mtime > summary.stat().st_mtime
    assert planned_jobs(work, tiny_config()) == {}


def job_process(workdir, log):
    """The pid of the job process writing `log` (a rule script keeps its log open)."""
    log = str((workdir / log).resolve())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == log for fd in fds):
                return int(pid)
        except OSError:  # gone, or not ours to read
            continue
    return None


@pytest.fixture(scope="module")
def changed_finetune(study, tmp_path_factory):
    """A clean run of the study after a finetune settings change: the reference."""
    work = tmp_path_factory.mktemp("changed") / "copy"
    shutil.copytree(study, work, symlinks=True)
    config = change(("stages", "finetune"), "epochs", 6)
    r = snakemake(work, config)
    assert r.returncode == 0, r.stderr[-3000:]
    return work, config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_job_killed_after_a_settings_change_never_leaves_stale_results(
    study, changed_finetune, tmp_path, sig
):
    reference, config = changed_finetune
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    (work / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.Popen(
        [
            SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            "tiny.yaml",
            "--cores",
            "2",
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while (pid := job_process(work, "logs/ml-100k/main/seed1/finetune.log")) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "finetune never started"
        time.sleep(0.02)
    os.kill(pid, sig)  # as a scheduler (SIGTERM) or the OOM killer (SIGKILL) would
    assert proc.wait(timeout=300) != 0
    assert not (work / "results/ml-100k/main/seed1/finetune.pt").exists()
    # the old settings' results are still there, and a plain rerun replaces them
    r = snakemake(work, config)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Nothing to be done" not in r.stdout + r.stderr
    for name in ("comparison.csv", "significance.json", "comparison.md"):
        assert (work / "results/ml-100k" / name).read_text() == (
            reference / "results/ml-100k" / name
        ).read_text(), name
    assert planned_jobs(work, config) == {}


def test_a_damaged_checkpoint_names_its_rule_and_deleting_it_recovers(study, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(study, work, symlinks=True)
    actor = work / "results/ml-100k/main/seed1/actor_pretrain.pt"
    stamp = actor.stat()
    actor.write_bytes(b"not a checkpoint")  # a bad disk block; its time says nothing changed
    os.utime(actor, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    config = change(("critic",), "critic_layers", [8])  # the critic reads the actor again
    # only the critic asked for: which other jobs finish before it fails is the scheduler's call
    r = snakemake(work, config, "results/ml-100k/main/seed1/critic_pretrain.pt")
    assert r.returncode != 0
    line = (
        "ract: error: results/ml-100k/main/seed1/actor_pretrain.pt: not a loadable ract checkpoint"
    )
    assert line in r.stderr
    assert (
        "rule actor_pretrain makes it here: delete results/ml-100k/main/seed1/"
        "actor_pretrain.pt and run again to remake it and everything made from it"
    ) in (work / "logs/ml-100k/main/seed1/critic_pretrain.log").read_text()
    actor.unlink()  # as the line says: the actor is remade, and all after it (the new critic)
    assert planned_jobs(work, config) == {
        **RERUNS["actor setting"][1],
        "evaluate": 4,
        "ract_dae_critic": 1,
        "ract_dae": 1,
    }

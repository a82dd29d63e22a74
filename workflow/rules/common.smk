import copy
import functools
import hashlib
import itertools
import json
import os
import sys
import threading
from pathlib import Path

import jsonschema
import yaml

# Parse time needs snakemake (with its jsonschema and pyyaml) and no installed `ract`: Snakemake
# puts the Snakefile's folder on sys.path, and `ract.provenance`, `ract.formats`, `ract.memory`
# and `ract.threads` import only the standard library. Jobs import `ract` from there too
# (workflow/scripts/adapter.py puts it first on their sys.path), so the code that runs is the
# code `code_hash` hashes; workflow/envs/ract.yaml holds the rest.
import ract.memory
import ract.provenance
from ract.formats import STAGES
from ract.threads import SPIN_VARIABLE, jobs_fit_cpus

# Whether this run's jobs may let idle OpenMP threads spin (ract/threads.py): only where they
# can never share a core, i.e. `--cores` is within the CPUs Snakemake may use. Jobs inherit the
# variable; a cluster job's own Snakemake, on its node, sets it again for its allocation.
os.environ[SPIN_VARIABLE] = "1" if jobs_fit_cpus(workflow.resource_settings.cores) else "0"

MODELS = {"actor_pretrain": "Mult-VAE", "finetune": "RaCT"}  # the checkpoints evaluated
BASELINES = {"mult_dae": "Mult-DAE", "ease": "EASE", "popularity": "Popularity"}
# Optional models trained per seed beside RaCT (`models:`), by checkpoint name: the control arm
# (Mult-VAE finetuned on its likelihood with RaCT's finetune schedule and draws) and RaCT on
# the Mult-DAE actor (paper Table 4).
ARMS = {"nll_finetune": "NLL finetune (control)", "ract_dae": "RaCT (Mult-DAE actor)"}
# The paired tests: (baseline, challenger) checkpoint names, when both models run.
PAIRS = [("actor_pretrain", "finetune"), ("nll_finetune", "finetune"), ("mult_dae", "ract_dae")]
NAMES = {**MODELS, **BASELINES, **ARMS}
# the model each finetuned one starts from
STARTS = {"finetune": "actor_pretrain", "nll_finetune": "actor_pretrain", "ract_dae": "mult_dae"}
# finetune settings that only concern the critic, which the control arm does not have
CRITIC_ONLY = ("critic_learning_rate", "freeze_critic", "carry_critic_optimizer")
SPLITS = ["validation", "test"]
# The config sections each training stage reads (cumulatively, with the stages before it).
STAGE_SECTIONS = {
    "actor_pretrain": [("actor",), ("stages", "actor_pretrain")],
    "critic_pretrain": [("critic",), ("stages", "critic_pretrain")],
    "finetune": [("stages", "finetune")],
}


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    variant=r"main|sweep-[0-9a-f]{8}",
    seed=r"\d+",
    stage="|".join(STAGES),
    split="|".join(SPLITS),


# ---- configuration: strict schema, defaults filled in, sweep expanded into variants ----------

# Paths inside the workflow are relative to this file, not to the working folder: the workflow
# also runs as a module of another one (README, "Use as a module").
# read with libyaml where PyYAML has it (the same safe loading, 6x faster: 0.04 s of each start)
SCHEMA = yaml.load(
    open(workflow.source_path("../schemas/config.schema.yaml")),
    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
)
# workflow/ where it lies on disk (source_path() answers with copies in Snakemake's source cache,
# which hold only the file asked for, not the scripts' neighbours or the `ract` beside them)
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent


def fill_defaults(schema, value):
    """Fill missing keys from the schema's defaults, for named properties and for the schema of
    every entry of a map (datasets)."""
    if not isinstance(value, dict):
        return value
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            fill_defaults(sub, value[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(value) - set(schema.get("properties", {})):
            fill_defaults(extra, value[key])
    return value


def config_error(path, message):
    where = ".".join(str(p) for p in path) or "(top level)"
    raise WorkflowError(f"config: {where}: {message}")


def check_config(cfg, where=()):
    errors = sorted(
        jsonschema.Draft202012Validator(SCHEMA).iter_errors(cfg),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        e = errors[0]
        config_error(list(where) + list(e.absolute_path), e.message)
    for name, ds in cfg["datasets"].items():
        if (ds["source"] is None) == (ds["path"] is None):
            config_error(
                ["datasets", name],
                "give exactly one of `source` (a known data set) or `path` (a file on disk)",
            )
        if ds["path"] is not None and ds["format"] is None:
            config_error(["datasets", name, "format"], "required with `path`")
    if "ract_dae" in cfg["models"] and "mult_dae" not in cfg["models"]:
        config_error(["models"], "ract_dae finetunes the Mult-DAE actor: add mult_dae too")
    return cfg


def shown_path(path):
    """`path` relative to the working directory when it lies inside it, else absolute."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


# The config files this run read, in the order they apply (`--configfile` ones last: they win).
_given = [Path(f).absolute() for f in workflow.overwrite_configfiles]
CONFIG_FILES = [f for f in map(Path, workflow.configfiles) if f.absolute() not in _given] + _given

# RecBole's name for the epochs of its pretraining stages, accepted for ours: (alias, name),
# and the sections (and sweep sections) where RecBole users would write it.
ALIAS = ("pretrain_epochs", "epochs")
ALIASED = [
    ("stages", "actor_pretrain"),
    ("stages", "critic_pretrain"),
    ("baselines", "mult_dae"),
    ("sweep", "actor_pretrain"),
    ("sweep", "critic_pretrain"),
]


def use_one_name(cfg):
    """Rename `pretrain_epochs` to `epochs`. After Snakemake merged the config files a section
    may hold both (config.yaml says `epochs`, the user's file `pretrain_epochs`): the last file
    that sets either wins; one file setting both is an error."""
    alias, name = ALIAS
    for path in ALIASED:
        d = cfg.get(path[0], {}).get(path[1])
        if not isinstance(d, dict) or alias not in d:
            continue
        if name in d and d[name] != d[alias]:  # only then are the files read again
            setting = [
                sub
                for data in (yaml.safe_load(open(f)) or {} for f in CONFIG_FILES)
                if isinstance(sub := (data.get(path[0]) or {}).get(path[1]), dict)
                and {alias, name} & set(sub)
            ]
            if not setting or {alias, name} <= set(setting[-1]):
                config_error(
                    list(path),
                    f"`{alias}` (RecBole's name) and `{name}` are one setting: give one",
                )
            if name in setting[-1]:
                d[alias] = d[name]
        d[name] = d.pop(alias)
    return cfg


use_one_name(config)
fill_defaults(SCHEMA, config)
check_config(config)


def sweep_variants(cfg):
    """{variant name: full config} for the base config ('main') and every sweep combination."""
    grid = [
        (
            ((section,), key, values)
            if section in ("actor", "critic")
            else (("stages", section), key, values)
        )
        for section, settings in cfg["sweep"].items()
        for key, values in settings.items()
    ]
    for section, key, _ in grid:
        known = SCHEMA["properties"][section[0]]
        known = known["properties"][section[1]] if len(section) == 2 else known
        if key not in known["properties"]:
            config_error(
                ["sweep", section[-1], key],
                "unknown setting; expected one of " + ", ".join(known["properties"]),
            )
    variants = {"main": cfg}
    for combo in itertools.product(*(values for _, _, values in grid)):
        v = copy.deepcopy(cfg)
        v["sweep"] = {}
        for (section, key, _), value in zip(grid, combo):
            target = v
            for part in section:
                target = target[part]
            target[key] = value
        check_config(v, where=("sweep",))
        digest = hashlib.sha1(json.dumps(sweep_point(v), sort_keys=True).encode()).hexdigest()
        name = f"sweep-{digest[:8]}"
        variants.setdefault(name, v)
    return variants


def sweep_point(cfg):
    return {"actor": cfg["actor"], "critic": cfg["critic"], "stages": cfg["stages"]}


VARIANTS = sweep_variants(config) if any(config["sweep"].values()) else {"main": config}
DATASETS = list(config["datasets"])
SEEDS = list(config["seeds"])


# The config files this run read, for the report's landing text, which Snakemake renders with
# `snakemake.config` and nothing else. Set after validation and the sweep's expansion: it is no
# setting and no job reads it.
config["configfiles"] = [shown_path(f) for f in CONFIG_FILES]


def section(cfg, path):
    for part in path:
        cfg = cfg[part]
    return cfg


def settings_through(variant, stage):
    """Every setting that a stage's checkpoint depends on: its own and its predecessors'."""
    cfg = VARIANTS[variant]
    upto = STAGES[: STAGES.index(stage) + 1]
    return json.dumps([section(cfg, p) for s in upto for p in STAGE_SECTIONS[s]], sort_keys=True)


def owner(variant, stage):
    """The first variant computing the same checkpoint: sweep variants share the stages that
    their swept settings do not touch (a finetune sweep trains one actor and one critic)."""
    key = settings_through(variant, stage)
    return next(v for v in VARIANTS if settings_through(v, stage) == key)


# ---- paths and params ------------------------------------------------------------------------


def run_dir(dataset, variant, seed):
    return f"results/{dataset}/{variant}/seed{seed}"


def stage_checkpoint(stage):
    """Input function: a stage's checkpoint for the run of the job's wildcards, from the
    variant that owns it (sweep variants share untouched stages)."""

    def path(w):
        return f"{run_dir(w.dataset, owner(w.variant, stage), w.seed)}/{stage}.pt"

    return path


def seed_number(w):
    """Params: the job's seed as a number."""
    return int(w.seed)


def history(dataset, variant, seed, stage):
    return f"{run_dir(dataset, owner(variant, stage), seed)}/{stage}_history.csv"


def evaluation(dataset, variant, seed, stage, split):
    v = owner(variant, stage)
    return f"{run_dir(dataset, v, seed)}/eval/{stage}_{split}_summary.json"


def evaluations(dataset, variant):
    return [
        evaluation(dataset, variant, seed, stage, split)
        for seed in SEEDS
        for stage in MODELS
        for split in SPLITS
    ]


def raw_input(w):
    ds = config["datasets"][w.dataset]
    return ds["path"] if ds["path"] else f"data/raw/{w.dataset}.json"


@functools.cache  # nine rules run train_stage: read and hash its code once per parse
def code_hash(script):
    """Params: a hash of the code a rule runs, its script (`workflow/scripts/<script>.py`) and
    everything it imports (`ract.provenance.code_files`); '' with `code_hash: false`. The
    package hashed is the `ract` beside this workflow, the one its jobs import, whichever `ract`
    this process imported."""
    if not config["code_hash"]:
        return ""
    return ract.provenance.code_hash(
        WORKFLOW_DIR / "scripts" / f"{script}.py", package=WORKFLOW_DIR.parent / "ract"
    )


def canonical(value):
    """Settings with sorted keys: Snakemake compares params as written, and the order of keys
    in config.yaml must not count as a change."""
    return json.loads(json.dumps(value, sort_keys=True))


def stage_settings(stage, variant=None):
    """Params function: exactly the settings a stage reads (its sections of its variant, or of
    `variant` for rules without that wildcard)."""

    def settings(w):
        cfg = VARIANTS[variant or w.variant]
        return canonical({p[-1]: section(cfg, p) for p in STAGE_SECTIONS[stage]})

    return settings


def control_settings(w):
    """The finetune stage run as the control arm: RaCT's finetune settings on the likelihood."""
    stage = {
        k: v for k, v in VARIANTS[w.variant]["stages"]["finetune"].items() if k not in CRITIC_ONLY
    }
    return canonical({"finetune": {**stage, "objective": "likelihood"}})


def seeded_models():
    """Checkpoint names of the models trained per seed and compared, in table order."""
    return [
        *MODELS,
        *(m for m in ("nll_finetune", "mult_dae", "ract_dae") if m in config["models"]),
    ]


def mult_dae_settings():
    """The actor_pretrain stage run as Mult-DAE, from `baselines.mult_dae`."""
    d = config["baselines"]["mult_dae"]
    return canonical(
        {
            "actor": {
                "latent_dimension": d["latent_dimension"],
                "mlp_hidden_size": [],
                "dropout_prob": d["dropout_prob"],
                "variational": False,
            },
            "actor_pretrain": {
                k: d[k]
                for k in ("epochs", "learning_rate", "batch_size", "l2_penalty", "validate_every")
            },
        }
    )


def comparison_files(dataset):
    """Every file the compare rule reads, each under an input name that says what it is, as
    {name: {"path": ..., "kind": ..., and the model, seed, split or stage it belongs to}}:
      summary     every model compared, each split (EASE and popularity: fitted once, seed 0)
      per_user    test metrics per user of each model in a paired test, seed by seed
      history     each seed's stages, in training order
      control     the NLL finetune control's history, per seed (when that model runs)
      critic_fit  the critic's fit on validation users, per seed
    The rule's input and its `files` param both come from here, so that a file and what it is
    cannot drift apart."""
    files = {}

    def add(name, path, **about):
        files[name] = {"path": path, **about}

    for seed, model, split in itertools.product(SEEDS, seeded_models(), SPLITS):
        path = per_seed_eval(dataset, seed, model, split, "summary.json")
        name = f"summary_{model}_seed{seed}_{split}"
        add(name, path, kind="summary", model=NAMES[model], seed=seed, split=split)
    for baseline, split in itertools.product(("ease", "popularity"), SPLITS):
        if baseline in config["models"]:
            path = f"results/{dataset}/baselines/eval/{baseline}_{split}_summary.json"
            name, model = f"summary_{baseline}_{split}", BASELINES[baseline]
            add(name, path, kind="summary", model=model, seed=0, split=split)
    for model, seed in paired_runs():
        path = per_seed_eval(dataset, seed, model, "test", "per_user.csv")
        name = f"per_user_{model}_seed{seed}_test"
        add(name, path, kind="per_user", model=NAMES[model], seed=seed, split="test")
    for seed, stage in itertools.product(SEEDS, STAGES):
        path = history(dataset, "main", seed, stage)
        add(f"history_seed{seed}_{stage}", path, kind="history", seed=seed, stage=stage)
    for seed in SEEDS if "nll_finetune" in config["models"] else []:
        path = f"{run_dir(dataset, 'main', seed)}/nll_finetune_history.csv"
        add(f"control_seed{seed}", path, kind="control", seed=seed)
    for seed in SEEDS:
        path = f"{run_dir(dataset, 'main', seed)}/eval/critic_pretrain_validation_critic_fit.csv"
        add(f"critic_fit_seed{seed}", path, kind="critic_fit", seed=seed)
    return files


def comparison_inputs(w):
    """Input function (compare): the path of every file compared, by its input name."""
    return {name: f["path"] for name, f in comparison_files(w.dataset).items()}


def comparison_descriptions(w):
    """Params function (compare): what each input is, by its input name. Without the paths: a
    job reads its files from its input, where Snakemake put them (a storage provider's local
    copies, say)."""
    return {
        name: {key: value for key, value in f.items() if key != "path"}
        for name, f in comparison_files(w.dataset).items()
    }


def eval_outputs(prefix):
    """The outputs of one evaluation job: per-user metrics and a summary for each split."""
    return {
        kind: [f"{prefix}_{split}_{kind}.{ext}" for split in SPLITS]
        for kind, ext in (("per_user", "csv"), ("summary", "json"))
    }


def per_seed_eval(dataset, seed, model, split, kind):
    """An evaluation output (`summary.json`, `per_user.csv`) of a per-seed model of the main
    run; RaCT's stages come from the run that owns them."""
    if model in STAGES:
        return evaluation(dataset, "main", seed, model, split).replace("summary.json", kind)
    return f"{run_dir(dataset, 'main', seed)}/eval/{model}_{split}_{kind}"


def pairs():
    """The paired tests to run: (baseline, challenger) names whose models are both compared."""
    on = seeded_models()
    return [(a, b) for a, b in PAIRS if a in on and b in on]


def paired_runs():
    """(checkpoint name, seed) of every per-user table the paired tests read."""
    models = dict.fromkeys(m for pair in pairs() for m in pair)
    return [(model, seed) for model in models for seed in SEEDS]


def lost_files(targets):
    """Missing files that finished results upstream of `targets` were made from, each said in
    one line (`ract.provenance`)."""
    lost = ract.provenance.lost_files(targets)
    for path in lost:
        print(
            f"ract: {path} is missing but results made from it exist: remaking it and "
            "everything that depends on it",
            file=sys.stderr,
        )
    return lost


def uses_gpu():
    return 1 if config["device"] == "cuda" else 0


def ease_mem_mb(wildcards, input):
    """fit_ease's memory request (MB) from the prepared split's manifest: EASE's estimated
    peak on its items and what the job holds besides (`ract.memory.ease_job_mb`), at least
    8000. Read once the split exists; a dry run before shows it as <TBD>."""
    manifest = json.loads(Path(input.split).read_text())
    return ract.memory.ease_job_mb(manifest["n_items"], manifest["n_interactions_kept"])


def stop_rescheduling():
    """Onsuccess and onerror: cancel Snakemake's pending rescheduling timer. After each round of
    scheduling, Snakemake starts a `threading.Timer` (the timespan of --max-jobs-per-timespan,
    1 s by default) that wakes its scheduler again; the last one outlives the run, and Python
    waits for it before Snakemake exits: up to a second added to every run. Once the run is
    over nothing is left to schedule. Timers that are not the scheduler's are left alone."""
    for thread in threading.enumerate():
        owner = getattr(getattr(thread, "function", None), "__module__", None) or ""
        if isinstance(thread, threading.Timer) and owner.startswith("snakemake.scheduling"):
            thread.cancel()

"""Command line: `python -m ract <fetch|synthesize|prepare|train|evaluate|recommend|watch> ...`.

Defaults come from the library's dataclasses, so the command line, the workflow and a notebook
always agree. Every failure ends with one line `ract: error: ...` on stderr (bad input, a full
disk, memory; an unexpected exception as `unexpected <Type>: <message>`, its traceback shown
with `-v`) and exit status 1; status 2 is argparse's, for a malformed command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import RactError, error_line

log = logging.getLogger("ract")


def _defaults(cls) -> dict:
    """A settings dataclass's field defaults by name."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _settings(p, cls):
    """`add(name, help, **kwargs)`: adds to `p` the option `--<name>` (dashes for underscores)
    of the settings dataclass `cls`'s field `name`, with the field's default (a tuple as
    argparse's list) shown at the end of `help` and, for a whole number or a float, its type;
    `kwargs` as for `add_argument`."""
    defaults = _defaults(cls)

    def add(name: str, help: str, **kwargs) -> None:
        default = defaults[name]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            kwargs.setdefault("type", type(default))
        p.add_argument(
            "--" + name.replace("_", "-"),
            default=list(default) if isinstance(default, tuple) else default,
            help=help + " (default: %(default)s)",
            **kwargs,
        )

    return add


def _anneal_steps(text: str):
    return "auto" if text == "auto" else int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def _threshold(text: str):
    return None if text.lower() in ("none", "null", "") else float(text)


def _columns(text: str) -> dict:
    """'user=userId,item=movieId,rating=rating' -> dict (values that are digits become ints)."""
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected role=column pairs, got {part!r}")
        out[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return out


# each command's line in `ract --help`
HELP = {
    "fetch": "obtain a known data set's raw interaction file",
    "synthesize": "write synthetic interactions in a raw format",
    "prepare": "binarise, filter and split interactions",
    "train": "run one training stage",
    "evaluate": "evaluate a checkpoint on validation or test users",
    "recommend": "top-N items for given users, or for a new user",
    "watch": "progress of the training stages under a results folder",
}


# Options of several commands, declared once
def _add_data(p) -> None:
    p.add_argument("--data", required=True, help="split folder written by `ract prepare`")


def _add_device(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")


def _add_fetch_args(p, required: bool):
    from .data.sources import DATASETS

    p.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        required=required,
        help="known data set to obtain (downloaded once, then read from --cache)",
    )
    p.add_argument(
        "--cache",
        default="data/raw",
        help="folder for downloads and extracted raw files (default: %(default)s)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="skip the home-site download; use only the offline route "
        "(ml-100k: the RecBole wheel from PyPI)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait on a network connection (default: %(default)s)",
    )


def _add_fetch(p) -> None:
    p.description = (
        "Download (or take from the cache) a known data set and "
        "print the raw file's path and reader format."
    )
    _add_fetch_args(p, required=True)


def _add_synthesize(p) -> None:
    from .data.synthetic import FORMATS as SYNTHETIC_FORMATS, PRESETS, SyntheticConfig

    p.description = (
        "Generate interactions with power-law item popularity and a "
        "log-normal spread of items per user, and write them as a raw file that "
        "`ract prepare` reads (prints the file and its format). Presets: "
        + "; ".join(
            f"{k}: {v['n_users']:,} users, {v['n_items']:,} items, "
            f"{v['n_interactions']:,} positive interactions"
            for k, v in PRESETS.items()
        )
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="shape of a paper data set")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the preset's users and interactions (default: %(default)s)",
    )
    for name in ("n_users", "n_items", "n_interactions"):
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help="required without --preset; overrides the preset",
        )
    setting = _settings(p, SyntheticConfig)
    setting("seed", "seed of the generator")
    p.add_argument(
        "--format",
        choices=sorted(SYNTHETIC_FORMATS),
        help="raw format to write (default: the preset's, else ml-csv)",
    )
    setting("item_exponent", "power-law exponent of item popularity")
    setting("user_sigma", "log-normal spread of items per user")
    setting("low_rating_share", "extra rows rated <= 3.5 per positive interaction")
    p.add_argument("--out", required=True, help="folder to write the raw file into")


def _add_prepare(p) -> None:
    from .data.readers import FORMAT_HELP

    p.description = (
        "Read raw interactions, binarise, filter, split users, and "
        "write sparse CSR split files, id maps and manifest.json to --out."
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "formats:\n" + "\n".join(f"  {k:10s} {v}" for k, v in FORMAT_HELP.items())
    _add_prepare_input(p)
    p.add_argument("--out", required=True, help="output folder for the split files")
    _add_split_settings(p)


def _add_prepare_input(p) -> None:
    """What `ract prepare` reads: a raw file in a format, or a known data set."""
    from .data.readers import FORMATS

    src = p.add_argument_group("input (either --input and --format, or --dataset)")
    src.add_argument("--input", help="raw interaction file (or Netflix folder)")
    src.add_argument("--format", choices=FORMATS, help="format of --input (see below)")
    src.add_argument(
        "--columns",
        type=_columns,
        help="csv/recbole: column roles, e.g. user=userId,item=movieId,rating=score "
        "(names, or 0-based positions)",
    )
    src.add_argument("--sep", help="csv: field separator (default ',')")
    src.add_argument("--no-header", action="store_true", help="csv: the file has no header")
    _add_fetch_args(src, required=False)


def _add_split_settings(p) -> None:
    """How `ract prepare` binarises, filters and splits (`ract.data.prepare.PrepareConfig`)."""
    from .data.prepare import PROTOCOLS, PrepareConfig

    setting = _settings(p, PrepareConfig)
    setting(
        "rating_threshold",
        "keep rows with rating > this; 'none' keeps every row (implicit data)",
        type=_threshold,
    )
    setting("min_user_count", "drop users with fewer items, after item filtering")
    setting("min_item_count", "drop items with fewer users, applied first")
    setting(
        "protocol",
        "strong: disjoint held-out users with 80/20 fold-in (paper); weak: "
        "each user's items split train/valid/test (RecBole)",
        choices=PROTOCOLS,
    )
    setting(
        "heldout_users",
        "strong: validation and test users each, a fraction < 1 or a count",
    )
    setting("heldout_proportion", "strong: share of a held-out user's items to predict")
    setting(
        "min_items_to_split",
        "strong: held-out users with fewer items keep all as fold-in",
    )
    setting(
        "weak_ratios",
        "weak: per-user split ratios",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
    )
    setting("seed", "seed of the user shuffle and item splits")


def _add_train(p) -> None:
    from .formats import STAGES
    from .train import STAGE_DEFAULTS, StageConfig

    p.description = (
        "Run one RaCT train_stage and write its best checkpoint and "
        "per-epoch history. Defaults per stage: "
        + "; ".join(
            f"{s}: " + ", ".join(f"{k}={v}" for k, v in STAGE_DEFAULTS[s].items()) for s in STAGES
        )
    )
    p.add_argument(
        "--train-stage",
        "--stage",
        dest="train_stage",
        choices=STAGES,
        required=True,
        help="actor_pretrain, critic_pretrain or finetune",
    )
    _add_train_paths(p)
    _add_stage_args(p)
    setting = _settings(p, StageConfig)
    setting("save_step", "write a checkpoint to --checkpoint-dir every N epochs; 0 never")
    setting("seed", "seed of initialisation, shuffling, dropout and z")
    _add_device(p)
    p.add_argument(
        "--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)"
    )
    _add_actor_args(p)
    _add_critic_args(p)


def _add_train_paths(p) -> None:
    """What `ract train` reads and writes."""
    _add_data(p)
    p.add_argument("--out", required=True, help="checkpoint to write (best epoch)")
    p.add_argument("--history", required=True, help="per-epoch history CSV to write")
    p.add_argument(
        "--pre-model-path",
        help="checkpoint to start from (required for "
        "critic_pretrain and finetune; continues the actor for actor_pretrain)",
    )
    p.add_argument("--checkpoint-dir", help="folder for the --save-step checkpoints")
    p.add_argument(
        "--resume",
        metavar="PATH",
        help="keep a resume point here (written every --resume-every seconds and on "
        "SIGTERM); run the same command again after a kill to continue from it",
    )
    p.add_argument(
        "--resume-every",
        type=float,
        metavar="SECONDS",
        help="seconds between resume points written to disk (default: once a "
        "minute, ract.resume.DEFAULT_EVERY)",
    )


def _add_stage_args(p) -> None:
    """The optimisation settings of a stage (`ract.train.StageConfig`): its schedule, then
    what it optimises and how the critic takes part."""
    from .train import CRITIC_KEEP, OBJECTIVES, PRECISIONS, StageConfig

    setting = _settings(p, StageConfig)
    _add_schedule_args(p, setting)
    setting(
        "objective",
        "finetune: critic (RaCT), or likelihood: the control arm, the same "
        "finetune on NLL + beta KL from the actor_pretrain checkpoint",
        choices=OBJECTIVES,
    )
    setting(
        "precision",
        "bf16: the actor's matrix multiplies in training run in bfloat16 (softmax, "
        "losses, weights, optimizer state and validation stay float32)",
        choices=PRECISIONS,
    )
    setting(
        "critic_keep",
        "critic_pretrain: keep the last epoch, or the one with the best validation r",
        choices=CRITIC_KEEP,
    )
    p.add_argument(
        "--fresh-critic-optimizer",
        action="store_true",
        help="finetune: start the critic's Adam afresh; default carries its state "
        "from critic_pretrain (original code)",
    )
    setting("critic_learning_rate", "finetune: learning rate of the critic's own steps")
    p.add_argument(
        "--freeze-critic",
        action="store_true",
        help="finetune: do not train the critic (RecBole); default keeps training it "
        "(original code)",
    )


def _add_schedule_args(p, setting) -> None:
    """How long a stage runs, in batches of what size, at what learning rate and penalty, and
    how often it validates (`setting`: adds a StageConfig field's option)."""
    from .train import STAGE_DEFAULTS

    p.add_argument(
        "--epochs",
        "--pretrain-epochs",
        dest="epochs",
        type=int,
        help="epochs (RecBole's pretrain_epochs); default per stage",
    )
    p.add_argument("--learning-rate", type=float, help="Adam learning rate; default per stage")
    setting("batch_size", "users per batch")
    setting("weight_decay", "L2 penalty of the trained network")
    setting(
        "l2_penalty",
        "actor_pretrain: lam * sum of squared weights added to each batch's loss "
        "(Mult-DAE in vae_cf: 0.01 / batch size)",
    )
    p.add_argument(
        "--min-steps",
        type=int,
        help="at least this many optimizer steps, extending the epochs "
        f"(default: {STAGE_DEFAULTS['critic_pretrain']['min_steps']} for "
        "critic_pretrain, 0 otherwise)",
    )
    p.add_argument(
        "--validate-every",
        type=int,
        help="validate once this many optimizer steps have passed since the last "
        "validation; 0 every epoch (default: "
        f"{STAGE_DEFAULTS['actor_pretrain']['validate_every']} for actor_pretrain, "
        f"{STAGE_DEFAULTS['critic_pretrain']['validate_every']} for critic_pretrain, "
        f"{STAGE_DEFAULTS['finetune']['validate_every']} for finetune)",
    )


def _add_actor_args(p) -> None:
    from .model import ActorConfig

    g = p.add_argument_group(
        "actor (new actor in actor_pretrain; otherwise read from the checkpoint)"
    )
    setting = _settings(g, ActorConfig)
    hidden = list(_defaults(ActorConfig)["mlp_hidden_size"])
    setting("latent_dimension", "size of z; RecBole's 256 would be 128 here")
    g.add_argument(
        "--mlp-hidden-size",
        type=int,
        nargs="*",
        default=None,
        help=f"hidden layer sizes (default: {hidden}, or none with --dae)",
    )
    setting("dropout_prob", "input dropout probability")
    g.add_argument(
        "--dae",
        action="store_true",
        help="train Mult-DAE instead of Mult-VAE: deterministic tanh code, no KL "
        "(with --mlp-hidden-size omitted: [n_items -> latent -> n_items])",
    )
    setting("anneal_cap", "largest KL weight beta")
    setting(
        "total_anneal_steps",
        "optimizer steps for beta to reach 1 before the cap, or auto: beta "
        "reaches the cap after 85.5%% of the stage's updates, as vae_cf on ML-20M",
        type=_anneal_steps,
    )


def _add_critic_args(p) -> None:
    from .model import CRITIC_NORMS, CriticConfig

    g = p.add_argument_group("critic (new critic in critic_pretrain)")
    setting = _settings(g, CriticConfig)
    setting("critic_layers", "critic hidden layer sizes", type=int, nargs="+")
    g.add_argument(
        "--critic-input-norm",
        choices=CRITIC_NORMS,
        default=_defaults(CriticConfig)["input_norm"],
        help="statistics of the critic's feature batch norm: fixed at their initial "
        "values as RaCT_CF runs, or running, updated by each critic step "
        "(default: %(default)s)",
    )
    setting("metrics_k", "k of the NDCG the critic predicts")


def _add_evaluate(p) -> None:
    from .evaluate import DEFAULT_KS, EVAL_BATCH_SIZE

    p.description = (
        "Rank all items for each user of a split (known items "
        "excluded) and write per-user metrics and a mean / standard-error "
        "summary. Metrics: ndcg, recall (paper: / min(k, held-out)), "
        "recall_recbole (/ held-out), mrr, hit, precision, at each k."
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to evaluate")
    _add_data(p)
    p.add_argument(
        "--split",
        choices=("validation", "test"),
        default="test",
        help="users to evaluate (default: %(default)s)",
    )
    p.add_argument(
        "--ks",
        type=int,
        nargs="+",
        default=list(DEFAULT_KS),
        help="cut-offs (default: %(default)s)",
    )
    p.add_argument("--per-user", required=True, help="per-user metrics CSV to write")
    p.add_argument("--summary", required=True, help="summary JSON to write")
    p.add_argument(
        "--batch-size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help="users per batch (default: %(default)s)",
    )
    _add_device(p)


def _add_recommend(p) -> None:
    p.description = (
        "Top-N unseen items (original ids) for users given by "
        "original id, from their known history in the split folder; or, with "
        "--items, for a user who is not in the data, from the items they have "
        "(fold-in, as for the held-out users of strong generalisation). Item ids "
        "the model does not know are reported and skipped."
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to use")
    _add_data(p)
    p.add_argument("--users", nargs="+", help="original user ids")
    p.add_argument("--users-file", help="file with one original user id per line")
    p.add_argument("--items", nargs="+", help="a new user's items (original ids)")
    p.add_argument("--items-file", help="file with a new user's items, one original id a line")
    p.add_argument("-n", "--n", type=int, default=10, help="items per user (default: %(default)s)")
    p.add_argument(
        "--format",
        choices=("csv", "json"),
        default="csv",
        help="output format (default: %(default)s)",
    )
    p.add_argument("--out", help="file to write (default: standard output)")
    _add_device(p)


def _add_watch(p) -> None:
    p.description = (
        "List the training stages under a results folder (running, "
        "done, failed) with their epoch, validation metric, elapsed time and "
        "ETA, from the progress file each stage keeps beside its history CSV."
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="folder to look in, recursively")
    p.add_argument("--follow", action="store_true", help="refresh until interrupted (Ctrl-C)")
    p.add_argument(
        "--every",
        type=float,
        default=5.0,
        help="--follow: seconds between refreshes (default: %(default)s)",
    )


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The `ract` parser for `argv` (default: sys.argv[1:]); each subcommand's arguments come
    from its `_add_<command>`."""
    parser = argparse.ArgumentParser(
        prog="ract",
        description="RaCT: ranking-critical actor-critic training for "
        "collaborative filtering (Lobel et al., ICLR 2020).",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and the traceback of an unexpected error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only the command asked for gets its arguments: theirs import torch, pandas and the data
    # readers for choices and defaults (seconds), which `ract --help` or `ract watch` never use.
    asked = next((a for a in (sys.argv[1:] if argv is None else argv) if a[:1] != "-"), None)
    for name, add in (
        ("fetch", _add_fetch),
        ("synthesize", _add_synthesize),
        ("prepare", _add_prepare),
        ("train", _add_train),
        ("evaluate", _add_evaluate),
        ("recommend", _add_recommend),
        ("watch", _add_watch),
    ):
        p = sub.add_parser(name, help=HELP[name])
        if name == asked:
            add(p)
    return parser


def _options_of(args, cls) -> dict:
    """The parsed options named as fields of the settings dataclass `cls` (those `_settings`
    declares, and the others of the same name)."""
    return {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }


def cmd_fetch(args):
    from .data.sources import fetch_dataset

    path, fmt = fetch_dataset(args.dataset, args.cache, offline=args.offline, timeout=args.timeout)
    print(f"{path}\t{fmt}")


def cmd_synthesize(args):
    from .data.synthetic import SyntheticConfig, synthetic_config, write_synthetic

    cfg = synthetic_config(args.preset, args.scale, **_options_of(args, SyntheticConfig))
    path = write_synthetic(cfg, args.out)
    log.info(
        "wrote %s: %s users, %s items, %s rows (%s positive)",
        path,
        f"{cfg.n_users:,}",
        f"{cfg.n_items:,}",
        f"{cfg.n_rows:,}",
        f"{cfg.n_interactions:,}",
    )
    print(f"{path}\t{cfg.format}")


def cmd_prepare(args):
    from .data.prepare import PrepareConfig, check_out_dir, prepare_split
    from .data.readers import read_interactions
    from .data.sources import check_cached, fetch_dataset

    cfg = PrepareConfig(
        **{**_options_of(args, PrepareConfig), "weak_ratios": tuple(args.weak_ratios)}
    )
    check_out_dir(args.out)
    if args.dataset and args.input:
        raise RactError("give either --input (with --format) or --dataset, not both")
    if args.dataset:
        path, fmt = fetch_dataset(
            args.dataset, args.cache, offline=args.offline, timeout=args.timeout
        )
    elif args.input:
        if not args.format:
            raise RactError("--input needs --format")
        path, fmt = Path(args.input), args.format
        check_cached(path)  # a file from the download cache (--cache) still as downloaded
    else:
        raise RactError("give --input with --format, or --dataset")
    frame = read_interactions(
        path, fmt, columns=args.columns, sep=args.sep, header=False if args.no_header else None
    )
    manifest = prepare_split(frame, cfg, args.out, source=str(path), extra={"format": fmt})
    log.info(
        "wrote %s: %d items, %s",
        args.out,
        manifest["n_items"],
        ", ".join(
            f"{k} {v['users']} users/{v['interactions']} interactions"
            for k, v in manifest["matrices"].items()
        ),
    )


def _stage_config(args):
    """The stage's settings from `ract train`'s options (`ract.train.StageConfig`)."""
    from .train import StageConfig, stage_defaults

    # epochs, learning_rate, min_steps and validate_every are None unless given, leaving the
    # stage's own default (STAGE_DEFAULTS)
    given = {k: v for k, v in _options_of(args, StageConfig).items() if v is not None}
    del given["train_stage"]
    cfg = stage_defaults(
        args.train_stage, carry_critic_optimizer=not args.fresh_critic_optimizer, **given
    )
    if cfg.save_step and not args.checkpoint_dir:
        raise RactError("setting save_step: needs --checkpoint-dir to write checkpoints to")
    return cfg


def _model_configs(args, n_items: int):
    """The actor's and the critic's settings from `ract train`'s options."""
    from .model import ActorConfig, CriticConfig

    hidden = args.mlp_hidden_size
    if hidden is None:
        hidden = () if args.dae else _defaults(ActorConfig)["mlp_hidden_size"]
    actor_cfg = ActorConfig(
        n_items=n_items,
        latent_dimension=args.latent_dimension,
        mlp_hidden_size=tuple(hidden),
        variational=not args.dae,
        dropout_prob=args.dropout_prob,
        anneal_cap=args.anneal_cap,
        total_anneal_steps=args.total_anneal_steps,
    )
    critic_cfg = CriticConfig(
        critic_layers=tuple(args.critic_layers),
        metrics_k=args.metrics_k,
        input_norm=args.critic_input_norm,
    )
    return actor_cfg, critic_cfg


def cmd_train(args):
    import torch
    from .data.splits import load_split
    from .resume import DEFAULT_EVERY
    from .train import train_stage

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _stage_config(args)
    data = load_split(args.data)
    actor_cfg, critic_cfg = _model_configs(args, data.n_items)
    train_stage(
        data,
        cfg,
        out_checkpoint=args.out,
        history_path=args.history,
        actor_cfg=actor_cfg,
        critic_cfg=critic_cfg,
        pre_model_path=args.pre_model_path,
        checkpoint_dir=args.checkpoint_dir,
        device=args.device,
        resume_path=args.resume,
        resume_every=DEFAULT_EVERY if args.resume_every is None else args.resume_every,
    )


def _load_actor(args):
    from .checkpoint import build_actor, load_checkpoint
    from .data.splits import load_split
    from .runtime import resolve_device

    data = load_split(args.data)
    state = load_checkpoint(args.checkpoint, data_hash=data.content_hash, n_items=data.n_items)
    device = resolve_device(args.device)
    return data, build_actor(state).to(device), device


def cmd_evaluate(args):
    from .evaluate import evaluate_to_frames
    from .formats import PAPER_METRICS
    from .io import write_csv, write_json

    data, actor, device = _load_actor(args)
    frame, summary = evaluate_to_frames(
        actor, data, args.split, args.ks, batch_size=args.batch_size, device=device
    )
    summary["checkpoint"] = str(args.checkpoint)
    write_csv(args.per_user, frame)
    write_json(args.summary, summary)
    m = summary["metrics"]
    log.info(
        "%s (%d users): %s",
        args.split,
        summary["n_users_evaluated"],
        " ".join(f"{k}={m[k]['mean']:.4f}±{m[k]['se']:.4f}" for k in PAPER_METRICS if k in m),
    )


def _ids(values, file) -> list[str]:
    """Ids given on the command line, then those of a file (whitespace-separated)."""
    ids = list(values or [])
    if file:
        try:
            ids += Path(file).read_text().split()
        except OSError as exc:
            raise RactError(f"{file}: cannot read ({exc.strerror})") from None
    return ids


def cmd_recommend(args):
    from .evaluate import recommend, recommend_for_items
    from .io import json_text, write_text

    users, items = _ids(args.users, args.users_file), _ids(args.items, args.items_file)
    if bool(users) == bool(items):
        raise RactError(
            "give users (--users, --users-file) or a new user's items (--items, "
            "--items-file), one of the two"
        )
    data, actor, device = _load_actor(args)
    if users:
        recs = recommend(actor, data, users, args.n, device=device)
    else:
        recs, unknown = recommend_for_items(actor, data, items, args.n, device=device)
        if unknown:
            log.warning(
                "%d of %d items not in %s, skipped: %s",
                len(unknown),
                len(items),
                data.path / "items.csv",
                " ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""),
            )
    text = (
        json_text(recs.to_dict(orient="records"))
        if args.format == "json"
        else recs.to_csv(index=False)
    )
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)


def cmd_watch(args):
    import time
    from .progress import progress_table, read_progress

    if not Path(args.results_dir).is_dir():
        raise RactError(f"{args.results_dir}: not a folder")
    while True:
        rows = read_progress(args.results_dir)
        text = (
            progress_table(rows, args.results_dir).to_string(index=False)
            if rows
            else f"no training stage has run under {args.results_dir} yet"
        )
        if args.follow:
            print("\033[H\033[J", end="")  # clear the terminal before each refresh
        print(text, flush=True)
        if not args.follow:
            return
        try:
            time.sleep(args.every)
        except KeyboardInterrupt:
            return


COMMANDS = {
    "fetch": cmd_fetch,
    "synthesize": cmd_synthesize,
    "prepare": cmd_prepare,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "watch": cmd_watch,
}
# The file and folder options of each command, (read, written) by argparse dest: no written one
# may name the path of another (`ract.paths`), checked before a command reads or writes anything.
PATH_OPTIONS = {
    "fetch": ((), ("cache",)),
    "synthesize": ((), ("out",)),
    "prepare": (("input", "cache"), ("out",)),
    "train": (("data", "pre_model_path"), ("out", "history", "checkpoint_dir", "resume")),
    "evaluate": (("checkpoint", "data"), ("per_user", "summary")),
    "recommend": (("checkpoint", "data", "users_file", "items_file"), ("out",)),
    "watch": (("results_dir",), ()),
}


def _check_paths(args) -> None:
    from .paths import refuse_shared_paths

    read, written = (
        {"--" + dest.replace("_", "-"): getattr(args, dest) for dest in dests}
        for dests in PATH_OPTIONS[args.command]
    )
    refuse_shared_paths(read, written)


def main(argv=None) -> int:
    # Idle OpenMP threads sleep rather than spin, so parallel jobs sharing cores do not slow
    # each other down several-fold; only effective when set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        _check_paths(args)
        COMMANDS[args.command](args)
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line
        if args.verbose and not isinstance(exc, RactError):
            traceback.print_exc()
        where = (
            "traceback above"
            if args.verbose
            else "run again as `ract -v ...` to see the traceback"
        )
        print(error_line(exc, where), file=sys.stderr)
        return 1
    return 0

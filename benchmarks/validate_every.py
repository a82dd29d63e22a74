"""How often a stage validates (`validate_every`) against which epoch it keeps, and its cost.

    python benchmarks/validate_every.py                 # ml-100k, the study's split, seeds 1-3
    python benchmarks/validate_every.py --seeds 1 --candidates 0 20

actor_pretrain (Mult-VAE) and Mult-DAE keep their best epoch on validation users' NDCG@100
among the epochs they validated: every epoch (N = 0), or each epoch after which N updates have
passed since the last validation (the start and the last epoch always). Validation draws no
random numbers, so training is the same for every N and only the set of candidate epochs
shrinks. So for each seed and model this trains once with N = 0 on ml-100k with the default
study's split (strong protocol) and settings, writing a checkpoint every epoch; replays the
rule on its history to find the epoch each N would keep; and scores that epoch's checkpoint on
the test users (for information only: nothing is chosen on test users). Seconds for N are the
N = 0 run's epoch seconds (training and validation, not the checkpoint writes) less the
validations N skips, each costing the mean of --timing-repeats timed validations of the
trained model. With --check, one real run per model with the first N > 0 (first seed) checks that
the replay keeps the same epoch with the same validation NDCG@100.

Writes benchmarks/results/validate-every.md (and .json).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import script_parser  # beside this script

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"actor": "Mult-VAE (actor_pretrain)", "mult_dae": "Mult-DAE"}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--candidates", type=int, nargs="+", default=[0, 10, 20, 50], help="N values compared"
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument(
        "--check", action="store_true", help="also train once with the first N > 0 per model"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/validate-every")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="train nothing: write --out from these results (runs made in parallel, say)",
    )
    return parser.parse_args(argv)


def replay(history, n: int) -> tuple[int, int]:
    """(kept epoch, validations after the start) under `validate_every = n`, from a history
    validated every epoch: the rule of `ract.train._Run.run` and `select`."""
    rows = history.to_dict("records")
    best, kept, validated_at, count = rows[0]["val_ndcg@100"], 0, 0, 0
    for row in rows[1:]:
        if row is rows[-1] or row["steps"] - validated_at >= n:
            validated_at, count = row["steps"], count + 1
            if row["val_ndcg@100"] > best:
                best, kept = row["val_ndcg@100"], int(row["epoch"])
    return kept, count


def study(args) -> list[dict]:
    import numpy as np
    import pandas as pd
    import torch

    from ract.checkpoint import build_actor, load_checkpoint
    from ract.data.prepare import PrepareConfig, prepare_split
    from ract.data.readers import read_interactions
    from ract.data.sources import fetch_dataset
    from ract.data.splits import load_split
    from ract.evaluate import evaluate_model
    from ract.model import ActorConfig
    from ract.train import stage_defaults, train_stage, validate

    torch.set_num_threads(args.threads)
    raw, fmt = fetch_dataset("ml-100k", ROOT / "data" / "raw", offline=True)
    work = Path(tempfile.mkdtemp(prefix="ract-validate-every-"))
    prepare_split(read_interactions(raw, fmt), PrepareConfig(), work / "split")  # the study's
    data = load_split(work / "split")
    actors = {
        "actor": (ActorConfig(n_items=data.n_items, total_anneal_steps="auto"), {}),
        "mult_dae": (
            ActorConfig(
                n_items=data.n_items, mlp_hidden_size=(), dropout_prob=0.5, variational=False
            ),
            {"l2_penalty": 2e-5},
        ),
    }

    def train(model, seed, n, save_step):
        actor_cfg, settings = actors[model]
        out = work / f"{model}-{seed}-{n}" / "actor_pretrain.pt"
        cfg = stage_defaults(
            "actor_pretrain", seed=seed, validate_every=n, save_step=save_step, **settings
        )
        t0 = time.perf_counter()
        summary = train_stage(
            data,
            cfg,
            out_checkpoint=str(out),
            history_path=str(out.with_suffix(".csv")),
            actor_cfg=actor_cfg,
            checkpoint_dir=str(out.parent / "epochs"),
        )
        return out, summary, time.perf_counter() - t0

    def test_ndcg(path) -> float:
        actor = build_actor(load_checkpoint(str(path))).eval()
        return float(np.nanmean(evaluate_model(actor, data.test, (100,), ("ndcg",))["ndcg@100"]))

    rows, checks = [], []
    for model in args.models:
        for seed in args.seeds:
            out, summary, wall = train(model, seed, 0, save_step=1)
            history = pd.read_csv(out.with_suffix(".csv"))
            actor = build_actor(load_checkpoint(str(out))).eval()
            t0 = time.perf_counter()
            for _ in range(args.timing_repeats):
                validate(actor, None, data, "cpu")
            per_validation = (time.perf_counter() - t0) / args.timing_repeats
            total = float(history["seconds"].sum())
            _, all_validations = replay(history, 0)
            for n in args.candidates:
                kept, validations = replay(history, n)
                path = (
                    out
                    if kept == summary["best_epoch"]
                    else (out.parent / "epochs" / f"actor_pretrain-epoch{kept:04d}.pt")
                )
                row = {
                    "model": model,
                    "seed": seed,
                    "validate_every": n,
                    "epochs": int(history["epoch"].max()),
                    "validations": validations,
                    "kept_epoch": kept,
                    "val_ndcg@100": float(history["val_ndcg@100"].iloc[kept]),
                    "test_ndcg@100": test_ndcg(path),
                    "seconds": total - (all_validations - validations) * per_validation,
                    "seconds_per_validation": per_validation,
                    "load_average": os.getloadavg()[0],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(out.parent / "epochs")
        n = next((n for n in args.candidates if n > 0), None)
        if n is not None and args.check:  # a real run with N > 0 keeps the epoch the replay says
            seed = args.seeds[0]
            _, summary, wall = train(model, seed, n, save_step=0)
            want = next(
                r for r in rows if (r["model"], r["seed"], r["validate_every"]) == (model, seed, n)
            )
            check = {
                "model": model,
                "seed": seed,
                "validate_every": n,
                "kept_epoch": summary["best_epoch"],
                "val_ndcg@100": summary["val_ndcg@100"],
                "replayed_epoch": want["kept_epoch"],
                "replayed_val_ndcg@100": want["val_ndcg@100"],
                "seconds": wall,
            }
            checks.append(check)
            print(json.dumps(check), flush=True)
    shutil.rmtree(work)
    return rows, checks


def markdown(results: dict) -> str:
    rows = results["runs"]
    lines = [
        "# How often to validate: `validate_every` against the epoch kept",
        "",
        f"ml-100k, the default study's split (strong protocol), study settings, "
        f"{results['threads']} threads; {results['machine']}, load average "
        f"{results['load_before']:.2f} before, {results['load_after']:.2f} after. "
        f"`python benchmarks/validate_every.py` ({results['date']}, commit {results['commit']}).",
        "N = 0 validates every epoch; N > 0 once N updates have passed since the last validation "
        "(first and last epochs always). Selection is on validation users only; test NDCG@100 "
        "is of the kept model, for information. Seconds: the N = 0 run's epoch seconds "
        "(training and validation) less the validations N skips, at the seconds of a "
        "validation timed on the trained model; on a loaded machine only their ratios mean "
        "anything.",
        "",
    ]
    if results.get("combined"):
        lines[-1:-1] = [f"Combined from: {', '.join(results['combined'])}.", ""]
    for kind, title in MODELS.items():
        mine = [r for r in rows if r["model"] == kind]
        if not mine:
            continue
        ns = sorted({r["validate_every"] for r in mine})
        seeds = sorted({r["seed"] for r in mine})
        lines += [
            f"## {title}",
            "",
            "| N | seed | validations | kept epoch | val NDCG@100 | test NDCG@100 | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in ns:
            for s in seeds:
                r = next(r for r in mine if r["validate_every"] == n and r["seed"] == s)
                lines.append(
                    f"| {n} | {s} | {r['validations']} | {r['kept_epoch']} | "
                    f"{r['val_ndcg@100']:.4f} | {r['test_ndcg@100']:.4f} | {r['seconds']:.1f} |"
                )
        lines += [
            "",
            "| N | mean val NDCG@100 (vs N=0) | mean test NDCG@100 (vs N=0) | mean seconds |",
            "|---|---|---|---|",
        ]

        def mean(n, key):
            vals = [r[key] for r in mine if r["validate_every"] == n]
            return sum(vals) / len(vals)

        for n in ns:
            lines.append(
                f"| {n} | {mean(n, 'val_ndcg@100'):.4f} "
                f"({mean(n, 'val_ndcg@100') - mean(0, 'val_ndcg@100'):+.4f}) | "
                f"{mean(n, 'test_ndcg@100'):.4f} "
                f"({mean(n, 'test_ndcg@100') - mean(0, 'test_ndcg@100'):+.4f}) | "
                f"{mean(n, 'seconds'):.1f} |"
            )
        lines.append("")
    for c in results.get("checks", []):
        lines.append(
            f"Check, {c['model']} seed {c['seed']} trained with N = {c['validate_every']}: "
            f"kept epoch {c['kept_epoch']} (replay: {c['replayed_epoch']}), validation "
            f"NDCG@100 {c['val_ndcg@100']:.4f} (replay: {c['replayed_val_ndcg@100']:.4f}), "
            f"{c['seconds']:.1f} s."
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.combine:
        parts = [read_part(p, args) for p in args.combine]
        results = {
            **parts[0],
            "load_before": max(p["load_before"] for p in parts),
            "load_after": max(p["load_after"] for p in parts),
            "runs": [r for p in parts for r in p["runs"]],
            "checks": [c for p in parts for c in p["checks"]],
            "combined": [str(p) for p in args.combine],
        }
        return write(results, args.out)
    load_before = os.getloadavg()[0]
    meta = metadata(args)
    rows, checks = study(args)
    results = {
        **meta,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "runs": rows,
        "checks": checks,
    }
    return write(results, args.out)


def read_part(path: Path, args) -> dict:
    """A results JSON, or the printed rows of a run stopped before it wrote one (a log: one
    JSON row per line; its seeds so far, the load average when it is read)."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    rows = [
        json.loads(line)
        for line in path.read_text().splitlines()
        if line.startswith("{") and '"test_ndcg@100"' in line
    ]
    load = max(r["load_average"] for r in rows)
    return {**metadata(args), "load_before": load, "load_after": load, "runs": rows, "checks": []}


def metadata(args) -> dict:
    import platform
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
    }


def write(results: dict, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

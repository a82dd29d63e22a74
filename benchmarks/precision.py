"""fp32 against bf16 (`precision: bf16`): training speed per stage, and ranking quality.

    python benchmarks/precision.py speed      # ms per step at the ML-20M shape
    python benchmarks/precision.py quality    # NDCG@100 on ml-100k, fp32 vs bf16, 3 seeds

speed: the three stages on the first `--batches` batches of 500 users of the ML-20M-shaped
split (benchmarks/data/, which benchmarks/run.py writes), fp32 and bf16 in
alternating fresh processes (benchmarks/levers.py runs them), the fastest of `--repeats` kept.

quality: ml-100k (offline route), the study's split and settings; for each seed the three
stages in fp32 and in bf16 from the same seed, then validation and test NDCG@100 of the
finetuned actor (evaluation is float32 in both). The difference bf16 - fp32 is given per seed,
as a mean over seeds with its t interval, and paired over test users (each user's NDCG averaged
over seeds, `ract.stats.paired_test`, bootstrap interval).

Writes `--out`.md and .json (default benchmarks/results/precision; the README's figures are
in results/precision-speed and precision-quality: `--out benchmarks/results/precision-speed`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import phase_env, script_parser, wait_of, write_results  # noqa: E402 (beside this script)

BF16 = (
    "import ract.train as _t\n_d = _t.stage_defaults\n"
    "_t.stage_defaults = lambda stage, **kw: _d(stage, precision='bf16', **kw)"
)


def speed(args) -> dict:
    from levers import run_variant

    from ract.formats import STAGES

    env = phase_env(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    best = {"fp32": {}, "bf16": {}}
    for r in range(args.repeats):
        for name, code in (("fp32", ""), ("bf16", BF16)):
            ms = run_variant(code, args.split, args.batches, 2, args.threads, env)
            best[name] = {s: min(ms[s], best[name].get(s, ms[s])) for s in STAGES}
            print(f"repeat {r + 1} {name}: " + ", ".join(f"{s} {ms[s]:.0f} ms" for s in STAGES))
    return {
        "split": str(args.split),
        "batches": args.batches,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [load_before, round(os.getloadavg()[0], 2)],
        "omp_wait": wait_of(env),
        "ms_per_step": best,
        "speedup": {s: best["fp32"][s] / best["bf16"][s] for s in STAGES},
    }


def quality(args) -> dict:
    import numpy as np
    import scipy.stats as sst
    import torch

    from ract.checkpoint import build_actor, load_checkpoint
    from ract.data.prepare import PrepareConfig, prepare_split
    from ract.data.readers import read_interactions
    from ract.data.sources import fetch_dataset
    from ract.data.splits import load_split
    from ract.evaluate import evaluate_model
    from ract.formats import STAGES
    from ract.stats import paired_test
    from ract.train import stage_defaults, train_stage

    torch.set_num_threads(args.threads)
    raw, fmt = fetch_dataset("ml-100k", ROOT / "data" / "raw", offline=True)
    work = Path(tempfile.mkdtemp(prefix="ract-precision-"))
    prepare_split(read_interactions(raw, fmt), PrepareConfig(heldout_users=0.1), work / "split")
    data = load_split(work / "split")
    rows, per_user = [], {"fp32": [], "bf16": []}
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            start, t0 = None, time.perf_counter()
            for stage in STAGES:
                out = work / f"{precision}-{seed}-{stage}.pt"
                cfg = stage_defaults(stage, seed=seed, precision=precision)
                train_stage(
                    data,
                    cfg,
                    out_checkpoint=str(out),
                    history_path=str(out.with_suffix(".csv")),
                    pre_model_path=start,
                )
                start = str(out)
            actor = build_actor(load_checkpoint(start)).eval()
            row = {"seed": seed, "precision": precision, "seconds": time.perf_counter() - t0}
            for split in ("validation", "test"):
                ndcg = evaluate_model(actor, getattr(data, split), (100,), ("ndcg",))["ndcg@100"]
                row[f"{split}_ndcg@100"] = float(np.nanmean(ndcg.numpy()))
                if split == "test":
                    per_user[precision].append(ndcg.numpy())
            rows.append(row)
            print(json.dumps(row), flush=True)
    diffs = {}
    for split in ("validation", "test"):
        key = f"{split}_ndcg@100"
        d = np.array(
            [
                b[key] - a[key]
                for a, b in zip(rows[0::2], rows[1::2])  # (fp32, bf16) of each seed
            ]
        )
        half = (
            float(sst.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
            if len(d) > 1
            else math.nan
        )
        diffs[split] = {"per_seed": d.tolist(), "mean": float(d.mean()), "ci95_half": half}
    paired = paired_test(np.mean(per_user["fp32"], axis=0), np.mean(per_user["bf16"], axis=0))
    return {"seeds": list(args.seeds), "runs": rows, "difference": diffs, "paired_test": paired}


def markdown(results: dict) -> str:
    lines = ["# fp32 against bf16", ""]
    if "speed" in results:
        s = results["speed"]
        lines += [
            f"Speed: ms per training step, the first {s['batches']} batches of 500 users of "
            f"{s['split']}, {s['threads']} threads, fastest of the repeats"
            + (
                f"; {s['date']}, load average {s['load_average'][0]} before, "
                f"{s['load_average'][1]} after, idle OpenMP threads: {s['omp_wait']}"
                if "date" in s
                else ""
            )
            + ".",
            "",
            "| stage | fp32 ms | bf16 ms | speed-up |",
            "|---|---|---|---|",
        ]
        for stage, up in s["speedup"].items():
            lines.append(
                f"| {stage} | {s['ms_per_step']['fp32'][stage]:.0f} | "
                f"{s['ms_per_step']['bf16'][stage]:.0f} | {up:.2f}x |"
            )
        lines.append("")
    if "quality" in results:
        q = results["quality"]
        lines += [
            "Quality: ml-100k, the study's split and stage settings, finetuned actor.",
            "",
            "| seed | precision | validation NDCG@100 | test NDCG@100 | seconds |",
            "|---|---|---|---|---|",
        ]
        for r in q["runs"]:
            lines.append(
                f"| {r['seed']} | {r['precision']} | {r['validation_ndcg@100']:.4f} | "
                f"{r['test_ndcg@100']:.4f} | {r['seconds']:.0f} |"
            )
        lines.append("")
        for split, d in q["difference"].items():
            lines.append(
                f"- {split} NDCG@100, bf16 - fp32: mean {d['mean']:+.4f} "
                f"(95% t interval over seeds +-{d['ci95_half']:.4f}; per seed "
                + ", ".join(f"{x:+.4f}" for x in d["per_seed"])
                + ")"
            )
        p = q["paired_test"]
        lines.append(
            f"- test users paired (NDCG@100 averaged over seeds, n={p['n']}): bf16 - fp32 "
            f"{p['mean_diff']:+.4f}, bootstrap 95% [{p['boot_low']:+.4f}, {p['boot_high']:+.4f}], "
            f"{p['verdict']}"
        )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("parts", nargs="+", choices=["speed", "quality"])
    parser.add_argument(
        "--split", type=Path, default=ROOT / "benchmarks/data/ml-20m-synthetic/split"
    )
    parser.add_argument("--batches", type=int, default=4, help="speed: batches per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="speed: alternating repeats")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/precision")
    args = parser.parse_args()
    if "speed" in args.parts and not (args.split / "manifest.json").exists():
        sys.exit(f"{args.split}: no split; run benchmarks/run.py first (it writes it)")
    results = {}
    if "speed" in args.parts:
        results["speed"] = speed(args)
    if "quality" in args.parts:
        results["quality"] = quality(args)
    write_results(args.out, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

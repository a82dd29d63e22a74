"""How often a stage validates (`validate_every`) against the epoch it keeps: the quality of
that choice, measured on validation users only, and the time it saves.

    python benchmarks/validate_every.py                     # both protocols, seeds 1-3
    python benchmarks/validate_every.py --protocols weak --seeds 1 --candidates 0 10

Models: the actor stage (Mult-VAE), Mult-DAE, and RaCT's finetune stage (from an actor and a
critic trained first with the study's settings). Each keeps the best of the epochs it
validated by validation users' NDCG@100: every epoch (N = 0), or each epoch after which N
updates have passed since the last validation (the start and the last epoch always).
Protocols: `strong`, the default study's split of ml-100k (ratings >= 4; 94 validation users
with 20% of their items held out), and `weak`, the end-to-end benchmark's (every rating; each
user's items split 80/10/10, so all 943 users validate).

Validation draws no random numbers, so training is the same for every N and only the set of
candidate epochs shrinks: each seed and model trains once with N = 0, writing a checkpoint
every epoch, and the rule is replayed for each N.

Selection quality without test users: the validation users are split at random into halves A
and B (--splits times); for each N, the candidates' mean NDCG@100 on A picks an epoch and B
scores it, and the other way round. A smaller N has more candidates but, for the same reason,
more chances to pick an epoch that is only lucky on A; the split-half score measures what is
left after that. The difference from N = 0 is averaged over the splits of a seed, then over
the seeds, with a 95% t interval over seeds. Also reported: the kept epoch's NDCG@100 on all
validation users (never higher than N = 0's: a subset of the candidates), and on test users
(for information; nothing is chosen on it).

Seconds for N: the N = 0 run's epoch seconds (training and validation, not checkpoint writes)
less the validations N skips, each taken from the same run's history (an epoch's seconds less
its training seconds), so that a load that changes during the run weighs on every N alike.
With --check, one real run per model with the first N > 0 (first seed) checks that the replay
keeps the same epoch with the same validation NDCG@100.

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

from common import script_parser, write_results  # beside this script

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "actor": "Mult-VAE (actor_pretrain)",
    "mult_dae": "Mult-DAE",
    "finetune": "RaCT (finetune)",
}
PROTOCOLS = {  # PrepareConfig settings of each protocol's split of ml-100k
    "strong": {},
    "weak": {"protocol": "weak", "rating_threshold": None},
}
STAGE_OF = {"actor": "actor_pretrain", "mult_dae": "actor_pretrain", "finetune": "finetune"}


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--candidates", type=int, nargs="+", default=[0, 4, 10, 20, 50], help="N values compared"
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--splits", type=int, default=200, help="random halvings per seed")
    parser.add_argument(
        "--check", action="store_true", help="also train once with the first N > 0 per model"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/validate-every")
    args = parser.parse_args(argv)
    if 0 not in args.candidates:
        parser.error("--candidates: include 0, the reference every other N is compared with")
    return args


def validated_epochs(history, n: int) -> list[int]:
    """The epochs a run validates under `validate_every = n`, from a history validated every
    epoch: the start (epoch 0), then the rule of `ract.train._Run.run`."""
    rows = history.to_dict("records")
    epochs, validated_at = [int(rows[0]["epoch"])], rows[0]["steps"]
    for row in rows[1:]:
        if row is rows[-1] or row["steps"] - validated_at >= n:
            validated_at = row["steps"]
            epochs.append(int(row["epoch"]))
    return epochs


def replay(history, n: int) -> tuple[int, int]:
    """(kept epoch, validations after the start) under `validate_every = n`: the first of the
    validated epochs with the best validation NDCG@100, as `select` keeps on a strict gain."""
    epochs = validated_epochs(history, n)
    return best_of(history, epochs), len(epochs) - 1


def best_of(history, epochs: list[int]) -> int:
    """The first of `epochs` with the best validation NDCG@100."""
    values = history.set_index("epoch")["val_ndcg@100"]
    return max(epochs, key=lambda e: (values[e], -e))


def split_half(per_user, candidates: list[int], splits: int, seed: int) -> float:
    """Mean NDCG@100 on one half of the validation users of the candidate epoch that is best
    on the other half, over `splits` random halvings (each both ways). per_user: (epochs + 1,
    users) array of the users with held-out items. The halvings depend on `seed` only, so every
    N of a seed is scored on the same ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    m = per_user[candidates]  # (C, U)
    half = m.shape[1] // 2
    scores = []
    for _ in range(splits):
        perm = rng.permutation(m.shape[1])
        for pick, score in ((perm[:half], perm[half:]), (perm[half:], perm[:half])):
            chosen = int(np.argmax(m[:, pick].mean(axis=1)))  # the first of equal ones
            scores.append(m[chosen, score].mean())
    return float(np.mean(scores))


class Bench:
    """One protocol's split of ml-100k in a temporary folder, and the runs made on it."""

    def __init__(self, args, protocol: str):
        from ract.data.prepare import PrepareConfig, prepare_split
        from ract.data.readers import read_interactions
        from ract.data.sources import fetch_dataset
        from ract.data.splits import load_split

        self.args, self.protocol = args, protocol
        raw, fmt = fetch_dataset("ml-100k", ROOT / "data" / "raw", offline=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"ract-validate-every-{protocol}-"))
        split = self.work / "split"
        prepare_split(read_interactions(raw, fmt), PrepareConfig(**PROTOCOLS[protocol]), split)
        self.data = load_split(split)
        self.starts: dict[int, Path] = {}  # seed -> the critic checkpoint finetune starts from

    def train(self, model: str, seed: int, n: int, save_step: int):
        """(kept checkpoint, summary, wall seconds) of one run with the study's settings."""
        from ract.model import ActorConfig
        from ract.train import stage_defaults

        settings, actor_cfg, start = {}, None, None
        if model == "finetune":
            start = self.start(seed)
        elif model == "mult_dae":
            settings = {"l2_penalty": 2e-5}
            actor_cfg = ActorConfig(
                n_items=self.data.n_items, mlp_hidden_size=(), dropout_prob=0.5, variational=False
            )
        else:
            actor_cfg = self.mult_vae()
        cfg = stage_defaults(
            STAGE_OF[model], seed=seed, validate_every=n, save_step=save_step, **settings
        )
        return self._run(f"{model}-{seed}-{n}", cfg, actor_cfg, start)

    def start(self, seed: int) -> Path:
        """finetune's starting point for a seed: the actor stage, then the critic stage, both
        with the study's settings (validating as the defaults do)."""
        from ract.train import stage_defaults

        if seed not in self.starts:
            cfg = stage_defaults("actor_pretrain", seed=seed)
            actor = self.work / f"actor-{seed}-{cfg.validate_every}" / "actor_pretrain.pt"
            if not actor.exists():  # the actor model's run with the default N, if made
                actor, _, _ = self._run(f"start-actor-{seed}", cfg, self.mult_vae(), None)
            cfg = stage_defaults("critic_pretrain", seed=seed)
            self.starts[seed], _, _ = self._run(f"start-critic-{seed}", cfg, None, actor)
        return self.starts[seed]

    def mult_vae(self):
        """The study's actor: Mult-VAE, beta annealed as vae_cf's (`total_anneal_steps: auto`)."""
        from ract.model import ActorConfig

        return ActorConfig(n_items=self.data.n_items, total_anneal_steps="auto")

    def _run(self, name: str, cfg, actor_cfg, start):
        from ract.train import train_stage

        out = self.work / name / f"{cfg.train_stage}.pt"
        t0 = time.perf_counter()
        summary = train_stage(
            self.data,
            cfg,
            out_checkpoint=str(out),
            history_path=str(out.with_suffix(".csv")),
            actor_cfg=actor_cfg,
            pre_model_path=str(start) if start else None,
            checkpoint_dir=str(out.parent / "epochs"),
        )
        return out, summary, time.perf_counter() - t0

    def checkpoint(self, model: str, seed: int, out: Path, epoch: int) -> Path:
        """The checkpoint of one epoch of a run saved every epoch (epoch 0: finetune's start)."""
        if epoch == 0:
            return self.start(seed)
        return out.parent / "epochs" / f"{STAGE_OF[model]}-epoch{epoch:04d}.pt"

    def ndcg(self, path: Path, split: str):
        """(users,) NDCG@100 of a checkpoint's actor on a split, NaN without held-out items."""
        from ract.checkpoint import build_actor, load_checkpoint
        from ract.evaluate import evaluate_model

        actor = build_actor(load_checkpoint(str(path))).eval()
        split = getattr(self.data, split)
        return evaluate_model(actor, split, (100,), ("ndcg",))["ndcg@100"].numpy()

    def per_epoch(self, model: str, seed: int, out: Path, history):
        """(epochs + 1, users) validation NDCG@100 of every epoch's checkpoint, users with
        held-out items only; each row's mean is checked against the history's. The actor
        stages' epoch 0 is the untrained model, not saved: its row is NaN and it is no
        candidate (checked to be the worst epoch, so it could never be kept)."""
        import numpy as np

        values = history.set_index("epoch")["val_ndcg@100"]
        rows = []
        for epoch in values.index:
            if epoch == 0 and model != "finetune":
                assert values[0] < values.iloc[1:].min(), "the untrained actor is not the worst"
                rows.append(None)
                continue
            v = self.ndcg(self.checkpoint(model, seed, out, epoch), "validation")
            assert abs(np.nanmean(v) - values[epoch]) < 1e-6, (model, seed, epoch)
            rows.append(v)
        width = next(r for r in rows if r is not None).shape[0]
        m = np.stack([np.full(width, np.nan) if r is None else r for r in rows])
        return m[:, ~np.isnan(m[-1])]

    def rows(self, model: str, seed: int) -> list[dict]:
        """One row per N for a seed's run validated every epoch."""
        import pandas as pd

        out, summary, _ = self.train(model, seed, 0, save_step=1)
        history = pd.read_csv(out.with_suffix(".csv"))
        per_user = self.per_epoch(model, seed, out, history)
        # seconds of each epoch's validation (epoch 0: only a validation)
        validating = history["seconds"] - history["train_seconds"].fillna(0.0)
        rows = []
        for n in self.args.candidates:
            epochs = validated_epochs(history, n)
            kept = best_of(history, epochs)
            candidates = [e for e in epochs if e or model == "finetune"]
            path = self.checkpoint(model, seed, out, kept)
            path = out if kept == summary["best_epoch"] else path
            row = {
                "protocol": self.protocol,
                "model": model,
                "seed": seed,
                "validate_every": n,
                "epochs": int(history["epoch"].max()),
                "validations": len(epochs) - 1,
                "kept_epoch": kept,
                "split_half_ndcg@100": split_half(per_user, candidates, self.args.splits, seed),
                "val_ndcg@100": float(history["val_ndcg@100"].iloc[kept]),
                "test_ndcg@100": float(pd.Series(self.ndcg(path, "test")).mean()),
                "seconds": float(history["train_seconds"].sum() + validating.iloc[epochs].sum()),
                "seconds_per_validation": float(validating.iloc[1:].mean()),
                "load_average": os.getloadavg()[0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        shutil.rmtree(out.parent / "epochs")
        return rows

    def check(self, model: str, rows: list[dict]) -> dict | None:
        """A real run with the first N > 0 (first seed) against the replay's kept epoch."""
        n = next((n for n in self.args.candidates if n > 0), None)
        if n is None:
            return None
        seed = self.args.seeds[0]
        _, summary, wall = self.train(model, seed, n, save_step=0)
        want = next(
            r for r in rows if (r["model"], r["seed"], r["validate_every"]) == (model, seed, n)
        )
        check = {
            "protocol": self.protocol,
            "model": model,
            "seed": seed,
            "validate_every": n,
            "kept_epoch": summary["best_epoch"],
            "val_ndcg@100": summary["val_ndcg@100"],
            "replayed_epoch": want["kept_epoch"],
            "replayed_val_ndcg@100": want["val_ndcg@100"],
            "seconds": wall,
        }
        print(json.dumps(check), flush=True)
        return check


def study(args) -> tuple[list[dict], list[dict]]:
    import torch

    torch.set_num_threads(args.threads)
    rows, checks = [], []
    for protocol in args.protocols:
        bench = Bench(args, protocol)
        for model in args.models:
            mine = [r for seed in args.seeds for r in bench.rows(model, seed)]
            rows += mine
            if args.check:
                checks.append(bench.check(model, mine))
        shutil.rmtree(bench.work)
    return rows, [c for c in checks if c]


def differences(rows: list[dict], n: int, key: str) -> tuple[float, float]:
    """Mean over seeds of (N's value - N = 0's) and its 95% t half-width (NaN for one seed)."""
    import math

    from scipy import stats

    def value(m, s):
        return next(r[key] for r in rows if r["validate_every"] == m and r["seed"] == s)

    seeds = sorted({r["seed"] for r in rows})
    d = [value(n, s) - value(0, s) for s in seeds]
    mean = sum(d) / len(d)
    if len(d) < 2:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, stats.t.ppf(0.975, len(d) - 1) * sd / math.sqrt(len(d))


def model_table(rows: list[dict]) -> list[str]:
    """The summary table of one protocol and model: N = 0's means, then each N against it."""

    def mean(n, key):
        vals = [r[key] for r in rows if r["validate_every"] == n]
        return sum(vals) / len(vals)

    lines = [
        "| N | validations | seconds | split-half NDCG@100 | all validation users | test |",
        "|---|---|---|---|---|---|",
    ]
    for n in sorted({r["validate_every"] for r in rows}):
        cells = []
        for key in ("split_half_ndcg@100", "val_ndcg@100", "test_ndcg@100"):
            if n == 0:
                cells.append(f"{mean(0, key):.4f}")
            else:
                d, half = differences(rows, n, key)
                cells.append(f"{d:+.4f} ± {half:.4f}")
        lines.append(
            f"| {n} | {mean(n, 'validations'):.0f} | {mean(n, 'seconds'):.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def markdown(results: dict) -> str:
    rows = results["runs"]
    lines = [
        "# How often to validate: `validate_every` against the epoch kept",
        "",
        f"ml-100k, the study's stage settings, seeds {results['seeds']}, {results['threads']} "
        f"threads; {results['machine']}, load average {results['load_before']:.2f} before, "
        f"{results['load_after']:.2f} after. `python benchmarks/validate_every.py` "
        f"({results['date']}, commit {results['commit']}, {results['seconds']:.0f} s).",
        "",
        "N = 0 validates every epoch; N > 0 once N updates have passed since the last "
        "validation (first and last epochs always). The N = 0 row gives means over seeds; "
        "the others, the mean difference from N = 0 ± its 95% t half-width over seeds. "
        f"Split-half: the kept epoch chosen on a random half of the validation users and "
        f"scored on the other half ({results['splits']} halvings per seed, both ways), the "
        "measure of selection quality. All validation users: the kept epoch's validation "
        "NDCG@100 (N > 0 can only lower it). Test: for information, nothing is chosen on it. "
        "Seconds: the stage's training and validation, from the N = 0 run's history less the "
        "validations N skips.",
        "",
    ]
    for protocol in PROTOCOLS:
        for model, title in MODELS.items():
            mine = [r for r in rows if r["protocol"] == protocol and r["model"] == model]
            if mine:
                per = sum(r["seconds_per_validation"] for r in mine) / len(mine)
                lines += [f"## {title}, {protocol} protocol", ""]
                lines += [f"A validation: {1000 * per:.0f} ms on average.", ""]
                lines += model_table(mine) + [""] + seed_table(mine) + [""]
    for c in results.get("checks", []):
        lines.append(
            f"Check, {c['protocol']} {c['model']} seed {c['seed']} trained with N = "
            f"{c['validate_every']}: kept epoch {c['kept_epoch']} (replay: "
            f"{c['replayed_epoch']}), validation NDCG@100 {c['val_ndcg@100']:.4f} (replay: "
            f"{c['replayed_val_ndcg@100']:.4f}), {c['seconds']:.1f} s."
        )
    return "\n".join(lines) + "\n"


def seed_table(rows: list[dict]) -> list[str]:
    lines = [
        "| N | seed | validations | kept epoch | split-half | all validation users | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["validate_every"], r["seed"])):
        lines.append(
            f"| {r['validate_every']} | {r['seed']} | {r['validations']} | {r['kept_epoch']} | "
            f"{r['split_half_ndcg@100']:.4f} | {r['val_ndcg@100']:.4f} | "
            f"{r['test_ndcg@100']:.4f} |"
        )
    return lines


def main(argv=None) -> int:
    import platform
    import subprocess

    args = parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "seeds": args.seeds,
        "splits": args.splits,
        "load_before": os.getloadavg()[0],
    }
    t0 = time.perf_counter()
    results["runs"], results["checks"] = study(args)
    results["seconds"] = time.perf_counter() - t0
    results["load_after"] = os.getloadavg()[0]
    write_results(args.out, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each speed lever is worth: training steps with one lever taken out at a time.

    python benchmarks/levers.py                       # after benchmarks/run.py made the data
    python benchmarks/levers.py --baseline 4a054fa    # also the code of an older commit

Every variant runs `ract.train.train_stage` for `--batches` batches of 500 users of the
ML-20M-shaped split (benchmarks/data/, written by run.py) in its own process; variants are
interleaved and repeated, and the fastest repeat is kept, which is the least disturbed by other
load on the machine. Prints milliseconds per step of each stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import phase_env, ract_of, script_parser  # beside this script
from ract.formats import STAGES

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "all levers": "",
    "glibc returns freed memory (default malloc)": (
        "import ract.train as t; t.reuse_freed_memory = lambda: None"
    ),
    "Adam not fused": "import ract.train as t, torch\n"
    "t._adam = lambda params, **kw: torch.optim.Adam(list(params), **kw)",
    "top-k: exact multi-pass path for every row": "import ract.model as m, ract.metrics as mt\n"
    "m.top_k_items = lambda s, k: mt._top_k_exact(s, min(k, s.shape[1]))",
    "kept/dropped counted over (B, n_items)": "import ract.model as m\n"
    "m.ActorOutput.counts = lambda o: (o.kept.sum(dim=1), o.dropped.sum(dim=1))",
    "dense batches (densified, then read back)": "import ract.train as t\n"
    "from ract.data.splits import dense_rows\n"
    "t.sparse_rows = dense_rows",
}

CHILD = """
import dataclasses, json, sys, time, torch
{patch}
from ract.data.splits import load_split
from ract.train import stage_defaults, train_stage
import pandas as pd
torch.set_num_threads({threads})
data = load_split({split!r})
val = dataclasses.replace(data.validation, **{{f: getattr(data.validation, f)[:500]
                                              for f in ("input", "holdout", "exclude")}})
data = dataclasses.replace(data, train=data.train[:{users}], validation=val)
batches = -(-data.train.shape[0] // 500)
out, start = {{}}, None
for stage in {stages!r}:
    ckpt, hist = {work!r} + f"/{{stage}}.pt", {work!r} + f"/{{stage}}.csv"
    extra = {{"min_steps": 0}} if stage == "critic_pretrain" else {{}}
    train_stage(data, stage_defaults(stage, epochs={epochs}, **extra), out_checkpoint=ckpt,
                history_path=hist, pre_model_path=start)
    start = ckpt
    out[stage] = float(pd.read_csv(hist)["train_seconds"].min()) / batches * 1e3
print(json.dumps(out))
"""


def run_variant(
    code: str, split: Path, batches: int, epochs: int, threads: int, env: dict
) -> dict:
    """Milliseconds per training step of each stage (the fastest of `epochs` epochs of
    `batches` batches), in a fresh process with `code` run first."""
    with tempfile.TemporaryDirectory() as work:
        script = CHILD.format(
            patch=code,
            threads=threads,
            split=str(Path(split).resolve()),
            users=500 * batches,
            stages=STAGES,
            work=work,
            epochs=epochs,
        )
        # run where no ract/ folder shadows the one PYTHONPATH names
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=work
        )
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--split", type=Path, default=ROOT / "benchmarks/data/ml-20m-synthetic/split"
    )
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--baseline", help="also time this commit's code (git revision)")
    args = parser.parse_args()
    env = phase_env(args.threads)
    variants = {name: (code, env) for name, code in VARIANTS.items()}
    old = ract_of(args.baseline)
    if args.baseline:
        variants[f"code of {args.baseline}"] = ("", {**env, "PYTHONPATH": old.name})
    best: dict[str, dict] = {}
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for _ in range(args.repeats):
        for name, (code, variant_env) in variants.items():
            result = run_variant(code, args.split, args.batches, 1, args.threads, variant_env)
            best[name] = {s: min(result[s], best.get(name, result)[s]) for s in STAGES}
    print(f"load average {os.getloadavg()[0]:.2f}; ms per step, best of {args.repeats}:\n")
    print("| variant | " + " | ".join(STAGES) + " |\n|---|---|---|---|")
    for name, ms in best.items():
        print(f"| {name} | " + " | ".join(f"{ms[s]:.0f}" for s in STAGES) + " |")
    old.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

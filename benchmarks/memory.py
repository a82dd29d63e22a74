"""Peak memory of each RaCT training stage, this project against RecBole 1.2.1 (not a test).

    python benchmarks/memory.py                         # 20,000-user subset and full shape
    python benchmarks/memory.py --shapes subset --repeats 3
    python benchmarks/memory.py --sides ract            # this project only
    python benchmarks/memory.py --shapes full --sides recbole --peer-stages finetune
                                                        # one RecBole stage, from --work's
                                                        # checkpoint of the stage before

Data: the ML-20M-shaped synthetic ratings (`ract.data.synthetic`, preset ml-20m, seed 0; made
by benchmarks/run.py into benchmarks/data/ml-20m-synthetic/raw, or here if missing), binarised
as the paper does (rating > 3.5, users with >= 5 items): `subset` is its first 20,000 users
(all 20,108 items), `full` all 136,677 users. Both sides get the same interactions and split
them the same way, per user at random 80/10/10 (RecBole's default; this project's `weak`
protocol), so each validates on every user.

Each stage runs in a process of its own, started from the previous stage's checkpoint, with 2
torch threads, for one epoch: the project's `ract.train.train_stage` (the code the workflow's
training rules run, batches of 500, validation before and after the epoch), and RecBole's
`run_recbole` (batches of 2048, its defaults: no validation in its two pretraining stages,
validation after finetune's epoch, then the test users scored). The peak is the process's
maximum resident set size as the kernel reports it to the parent (`os.wait4`). For the
project, a thread in the child also samples the resident size every 10 ms and records the
peak of each phase (loading, model building, each training pass, each validation).

RecBole runs from its own venv, `--peer-venv` (default benchmarks/.peer-venv), made with:

    python3 -m venv benchmarks/.peer-venv
    benchmarks/.peer-venv/bin/pip install torch==2.13.0 recbole==1.2.1
    benchmarks/.peer-venv/bin/pip install numpy==1.26.4 pandas==2.1.4 scipy==1.11.4 "setuptools<70"

Results: results/memory.json (every run) and results/memory.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import machine as common_machine, ract_of  # beside this script

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
STAGES = ("actor_pretrain", "critic_pretrain", "finetune")
SHAPES = {"subset": 20_000, "full": None}  # users kept (None: all)
RAW = HERE / "data" / "ml-20m-synthetic" / "raw" / "ratings.csv"
PEER_VENV = HERE / ".peer-venv"
PEER_RECIPE = (
    "python3 -m venv {v} && {v}/bin/pip install torch==2.13.0 recbole==1.2.1 && "
    '{v}/bin/pip install numpy==1.26.4 pandas==2.1.4 scipy==1.11.4 "setuptools<70"'
)
MIB = 2**20


# ---- data -------------------------------------------------------------------------------------


def make_data(raw: Path, work: Path, shape: str) -> dict:
    """The shape's positives as ratings.csv (for `ract`), its weak split, and a RecBole
    atomic file `recbole/<shape>/<shape>.inter`, written once."""
    import pandas as pd

    from ract.data.prepare import PrepareConfig, prepare_split
    from ract.data.readers import read_interactions

    folder = work / shape
    done = folder / "data.json"
    if done.exists():
        return json.loads(done.read_text())
    if not raw.exists():
        from ract.data.synthetic import synthesize

        raw, _ = synthesize(raw.parents[1], preset="ml-20m", seed=0)
    frame = pd.read_csv(raw)
    frame = frame[frame["rating"] > 3.5]
    frame = frame[frame.groupby("userId")["userId"].transform("size") >= 5]
    if SHAPES[shape] is not None:
        users = frame["userId"].drop_duplicates().sort_values().iloc[: SHAPES[shape]]
        frame = frame[frame["userId"].isin(users)]
    (folder / "recbole" / shape).mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ratings.csv", index=False)
    frame[["userId", "movieId"]].to_csv(
        folder / "recbole" / shape / f"{shape}.inter",
        sep="\t",
        index=False,
        header=["user_id:token", "item_id:token"],
    )
    cfg = PrepareConfig(protocol="weak")
    manifest = prepare_split(
        read_interactions(folder / "ratings.csv", "ml-csv"), cfg, folder / "split"
    )
    info = {
        "users": int(frame["userId"].nunique()),
        "items": int(frame["movieId"].nunique()),
        "interactions": len(frame),
        "ract_split": manifest["matrices"],
    }
    done.write_text(json.dumps(info, indent=1))
    return info


# ---- child processes ---------------------------------------------------------------------------


class PhasePeaks:
    """Samples this process's resident size every 10 ms; the peak of each named phase."""

    def __init__(self):
        self.phase, self.peaks, self._stop = "start", {}, False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(0.01)

    def enter(self, phase: str):
        time.sleep(0.02)  # a last sample of the phase before
        self.phase = phase

    def stop(self) -> dict[str, float]:
        time.sleep(0.02)
        self._stop = True
        return {k: round(v / MIB) for k, v in self.peaks.items()}


def child_ract(spec: dict) -> dict:
    """One project stage: `train_stage` for one epoch, the phases' peaks recorded."""
    probe = PhasePeaks()
    import torch

    import ract.train as T
    from ract.data.splits import load_split

    torch.set_num_threads(spec["threads"])
    probe.enter("load")
    data = load_split(spec["split"])
    probe.enter("build")
    train_epoch, validate = T._Run.train_epoch, T._Run.validate

    def traced_train(run, epoch):
        probe.enter(f"train epoch {epoch}")
        out = train_epoch(run, epoch)
        probe.enter("other")
        return out

    def traced_validate(run):
        probe.enter(f"validate {len(run.history)}")
        out = validate(run)
        probe.enter("other")
        return out

    T._Run.train_epoch, T._Run.validate = traced_train, traced_validate
    overrides = {"epochs": 1}
    if spec["stage"] == "critic_pretrain":
        overrides.update(min_steps=0, validate_every=0)  # one epoch, validated as the others
    start = time.perf_counter()
    T.train_stage(
        data,
        T.stage_defaults(spec["stage"], **overrides),
        out_checkpoint=spec["checkpoint"],
        history_path=spec["history"],
        pre_model_path=spec.get("start"),
    )
    return {"seconds": time.perf_counter() - start, "phases": probe.stop()}


# RecBole's side: a script for the peer venv's python, kept to this one function.
PEER_SCRIPT = """
import json, sys, time
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from recbole.quick_start import run_recbole
start = time.perf_counter()
result = run_recbole(model="RaCT", dataset=spec["dataset"], config_dict=spec["config"])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "test": {k: float(v) for k, v in result["test_result"].items()}}))
"""


def peer_config(work: Path, shape: str, stage: str, threads: int) -> dict:
    """run_recbole's settings for one stage: one epoch, each stage's learning rate as in
    RecBole's documentation of RaCT, checkpoints per stage."""
    folder = work / shape / "peer"
    config = {
        "data_path": str(work / shape / "recbole"),
        "load_col": {"inter": ["user_id", "item_id"]},
        "train_neg_sample_args": None,
        "train_stage": stage,
        "pretrain_epochs": 1,
        "save_step": 1,
        "epochs": 1,
        "checkpoint_dir": str(folder / stage),
        "show_progress": False,
        "use_gpu": False,
        "learning_rate": {"actor_pretrain": 1e-3, "critic_pretrain": 1e-4, "finetune": 2e-6}[
            stage
        ],
    }
    previous = {"critic_pretrain": "actor_pretrain", "finetune": "critic_pretrain"}.get(stage)
    if previous:
        config["pre_model_path"] = str(folder / previous / f"RaCT-{shape}-1.pth")
    return {"dataset": shape, "config": config, "threads": threads}


# ---- parent ------------------------------------------------------------------------------------


def run_child(argv: list[str], log: Path, env: dict, cwd: Path) -> tuple[dict, int]:
    """Run a child to the end; (its last JSON line, its peak RSS in bytes from wait4)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = log.read_text().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}); see {log}")
    return json.loads(lines[-1]), usage.ru_maxrss * 1024  # Linux reports KiB


def child_env(threads: int, code: Path = ROOT) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # RecBole's checkpoints pickle its Config
        "PYTHONPATH": str(code),  # the `ract` package measured
    }


def run_ract(
    work: Path, shape: str, run: int, threads: int, code: Path = ROOT, name="ract"
) -> dict:
    """The project's three stages, each in its own process, with the `ract` package in
    `code` (this checkout, or a baseline revision's)."""
    folder = work / shape / f"{name}-{run}"
    out, start = {}, None
    for stage in STAGES:
        spec = {
            "stage": stage,
            "split": str(work / shape / "split"),
            "checkpoint": str(folder / f"{stage}.pt"),
            "history": str(folder / f"{stage}.csv"),
            "start": start,
            "threads": threads,
        }
        argv = [sys.executable, __file__, "--child", json.dumps(spec)]
        result, peak = run_child(argv, folder / f"{stage}.log", child_env(threads, code), ROOT)
        out[stage] = {"peak_mib": round(peak / MIB), **result}
        start = spec["checkpoint"]
        print(f"{name} {shape} run {run} {stage}: {out[stage]['peak_mib']} MiB", flush=True)
    return out


def run_peer(venv: Path, work: Path, shape: str, threads: int, stages=STAGES) -> dict:
    """RecBole's `stages`, each in its own process; a later stage alone starts from the
    checkpoint an earlier run of this script left in `work`."""
    out = {}
    for stage in stages:
        spec = peer_config(work, shape, stage, threads)
        start = spec["config"].get("pre_model_path")
        if start and not Path(start).exists():
            raise SystemExit(f"RecBole's {stage} needs {start}; run its earlier stages first")
        argv = [str(venv / "bin" / "python"), "-c", PEER_SCRIPT, json.dumps(spec)]
        folder = work / shape / "peer"
        result, peak = run_child(argv, folder / f"{stage}.log", child_env(threads), folder)
        out[stage] = {"peak_mib": round(peak / MIB), **result}
        print(f"recbole {shape} {stage}: {out[stage]['peak_mib']} MiB", flush=True)
    return out


def machine() -> dict:
    return {**common_machine(), "load_before": os.getloadavg()}


def _cell(runs: list[dict] | None, stage: str) -> str:
    """Highest peak of the runs (with the range where there are several), MiB."""
    if not runs:
        return ""
    peaks = [r[stage]["peak_mib"] for r in runs if stage in r]
    if not peaks:
        return ""
    spread = f" ({min(peaks):,}-{max(peaks):,})" if len(peaks) > 1 else ""
    return f"{max(peaks):,}{spread}"


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"# Peak memory per training stage against RecBole 1.2.1 ({results['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"torch {m['torch']}, {results['threads']} threads. The machine was shared with other "
        "work, which changes the seconds, not the peaks.",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in results["commands"]],
        "",
        "Peak resident memory (MiB) of the process of each stage, one epoch each (see "
        "benchmarks/memory.py for what each side runs): the highest of the runs, and in "
        "brackets the lowest and highest where there are several. *baseline* is the project "
        f"at {results.get('baseline') or '-'}, before this work.",
        "",
        "| shape | stage | RecBole 1.2.1 | ract | ract - RecBole | baseline |",
        "|---|---|---|---|---|---|",
    ]
    for shape, res in results["shapes"].items():
        for stage in STAGES:
            peer = res.get("recbole", [])
            ours = res.get("ract", [])
            gap = ""
            if peer and ours and stage in peer[0]:
                gap = f"{max(r[stage]['peak_mib'] for r in ours) - peer[0][stage]['peak_mib']:+,}"
            lines.append(
                f"| {shape} ({res['data']['users']:,} x {res['data']['items']:,}) | {stage} | "
                f"{_cell(peer, stage)} | {_cell(ours, stage)} | {gap} | "
                f"{_cell(res.get('baseline'), stage)} |"
            )
    for rep in results.get("stage_repeats", []):
        peaks = [r["peak_mib"] for r in rep["runs"]]
        lines += [
            "",
            f"Between runs: {rep['stage']} on {rep['split']}, {len(peaks)} fresh processes "
            f"(`{rep['command']}`): peaks {', '.join(f'{p:,}' for p in peaks)} MiB.",
        ]
    lines += ["", "Peak per phase of the project's stages (MiB, first run):", ""]
    for shape, res in results["shapes"].items():
        for side in ("ract", "baseline"):
            for stage in STAGES if res.get(side) else ():
                phases = res[side][0][stage]["phases"]
                text = ", ".join(f"{k} {v:,}" for k, v in phases.items())
                lines.append(f"- {side}, {shape}, {stage}: {text}")
    return "\n".join(lines) + "\n"


def repeat_stage(args) -> None:
    """One project stage, `--repeats` times in fresh processes on one split: how much its
    peak varies between runs (stage_repeats in memory.json)."""
    saved = args.out / "memory.json"
    results = json.loads(saved.read_text()) if args.merge and saved.exists() else {"shapes": {}}
    runs = []
    for r in range(args.repeats):
        folder = args.work / f"repeat-{args.stage}-{r}"
        spec = {
            "stage": args.stage,
            "split": str(args.split),
            "checkpoint": str(folder / f"{args.stage}.pt"),
            "history": str(folder / f"{args.stage}.csv"),
            "start": str(args.start) if args.start else None,
            "threads": args.threads,
        }
        argv = [sys.executable, __file__, "--child", json.dumps(spec)]
        result, peak = run_child(argv, folder / "log", child_env(args.threads), ROOT)
        runs.append({"peak_mib": round(peak / MIB), **result})
        print(f"{args.stage} run {r}: {runs[-1]['peak_mib']} MiB", flush=True)
    command = "python benchmarks/memory.py " + " ".join(sys.argv[1:])
    results.setdefault("stage_repeats", []).append(
        {"command": command, "split": str(args.split), "stage": args.stage, "runs": runs}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1) + "\n")


def merge_side(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """A side's runs from a later invocation: they replace the earlier runs, except that a
    run of only some stages (`--peer-stages`) keeps the earlier first run's other stages."""
    if old and all(set(run) < set(STAGES) for run in new):
        return [{**old[0], **run} for run in new]
    return new


def combine(paths: list[Path], out: Path) -> None:
    """One memory.json (and memory.md) from several: later files' sides replace earlier ones
    (see merge_side); every command and stage repeat is kept, once."""
    results: dict = {"shapes": {}, "commands": [], "stage_repeats": []}
    for path in paths:
        part = json.loads(path.read_text())
        kept = {
            k: results[k] + [x for x in part.get(k, []) if x not in results[k]]
            for k in ("commands", "stage_repeats")
        }
        results.update({k: v for k, v in part.items() if k != "shapes"}, **kept)
        for shape, sides in part["shapes"].items():
            mine = results["shapes"].setdefault(shape, {})
            for side, runs in sides.items():
                mine[side] = runs if side == "data" else merge_side(mine.get(side), runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "memory.md").write_text(report(results))
    print(report(results))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument(
        "--sides", nargs="+", default=["recbole", "ract"], choices=["recbole", "ract", "baseline"]
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs of the project's stages")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    ap.add_argument(
        "--peer-stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        help="RecBole's stages to run (a later one alone starts from --work's checkpoints)",
    )
    ap.add_argument("--baseline", help="the git revision the baseline side runs")
    ap.add_argument("--raw", type=Path, default=RAW, help="the ML-20M-shaped ratings.csv")
    ap.add_argument("--work", type=Path, default=HERE / "data" / "memory")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--merge", action="store_true", help="keep the other measurements in --out's memory.json"
    )
    ap.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        help="only merge these memory.json files (runs made apart) into --out's",
    )
    ap.add_argument(
        "--stage",
        choices=STAGES,
        help="only run this project stage --repeats times on --split from --start",
    )
    ap.add_argument("--split", type=Path, help="with --stage: a prepared split folder")
    ap.add_argument("--start", type=Path, help="with --stage: the previous stage's checkpoint")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child_ract(json.loads(args.child))))
        return
    if args.combine:
        combine(args.combine, args.out)
        return
    if args.stage:
        repeat_stage(args)
        return
    if "recbole" in args.sides and not (args.peer_venv / "bin" / "python").exists():
        raise SystemExit(
            f"no RecBole venv at {args.peer_venv}; make it with: "
            + PEER_RECIPE.format(v=args.peer_venv)
            + " (or leave recbole out of --sides)"
        )
    if "baseline" in args.sides and not args.baseline:
        raise SystemExit("--sides baseline needs --baseline REVISION")
    saved = args.out / "memory.json"
    results = json.loads(saved.read_text()) if args.merge and saved.exists() else {"shapes": {}}
    command = "python benchmarks/memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=machine(),
        threads=args.threads,
        commands=[*results.get("commands", []), command],
    )
    if args.baseline:
        results["baseline"] = args.baseline
    for shape in args.shapes:
        data = make_data(args.raw, args.work, shape)
        for side in args.sides:
            if side == "recbole":
                runs = [run_peer(args.peer_venv, args.work, shape, args.threads, args.peer_stages)]
            else:
                with ract_of(args.baseline if side == "baseline" else None) as old:
                    code = Path(old) if side == "baseline" else ROOT
                    name = f"baseline-{args.baseline}" if side == "baseline" else side
                    runs = [
                        run_ract(args.work, shape, r, args.threads, code, name)
                        for r in range(args.repeats)
                    ]
            # read again before writing: another invocation may have added its sides meanwhile
            if args.merge and saved.exists():
                results["shapes"] = json.loads(saved.read_text())["shapes"]
            mine = results["shapes"].setdefault(shape, {})
            mine.update({"data": data, side: merge_side(mine.get(side), runs)})
            args.out.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(results, indent=1) + "\n")
            (args.out / "memory.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()

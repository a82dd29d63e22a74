"""How fast and lean the pipeline runs, and how close to the machine's limit (not a test).

    python benchmarks/run.py                    # ml-100k and ML-20M-shaped synthetic data
    python benchmarks/run.py --datasets ml-100k # one data set
    python benchmarks/run.py --study            # + the overhead of the default ml-100k study

Each phase runs in its own process, so that its peak RSS is its own: prepare (raw file to
split files), one process per training stage (the real `train_stage`, checkpoint and history
included), evaluation of the test users, and the dense matrix-multiply rate of this machine at
the actor's shapes, measured before and after the training phases. Results go to
benchmarks/results/latest.json, latest.csv and latest.md; generated data to benchmarks/data/.
benchmarks/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, phase_env, script_parser, wait_of  # beside this script
from ract.formats import STAGES

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"

# ml-100k: the study's settings; epochs are 2 batches, so several of them give a stable time.
# ML-20M shape: the paper's 10,000 validation and 10,000 test users; one epoch per stage.
DATASETS = {
    "ml-100k": {
        "source": "ml-100k",
        "prepare": {"heldout_users": 0.1},
        "epochs": 50,
        "step_batches": 2,
        "step_epochs": 20,
    },
    "ml-20m-synthetic": {
        "synthetic": {"preset": "ml-20m", "seed": 0},
        "prepare": {"heldout_users": 10_000},
        "epochs": 1,
        "step_batches": 20,
        "step_epochs": 1,
    },
}


# ---- child processes: one phase each, one JSON line on stdout --------------------------------


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def phase_raw(spec: dict) -> dict:
    start = time.perf_counter()
    if "synthetic" in spec:
        from ract.data.synthetic import synthesize

        path, fmt = synthesize(spec["data_dir"], **spec["synthetic"])
    else:
        from ract.data.sources import fetch_dataset

        path, fmt = fetch_dataset(spec["source"], spec["cache"], offline=True)
    return {"path": str(path), "format": fmt, "seconds": time.perf_counter() - start}


def phase_prepare(spec: dict) -> dict:
    from ract.data.prepare import PrepareConfig, prepare_split
    from ract.data.readers import read_interactions

    start = time.perf_counter()
    frame = read_interactions(spec["path"], spec["format"])
    read = time.perf_counter() - start
    manifest = prepare_split(frame, PrepareConfig(**spec["prepare"]), spec["split"])
    return {
        "seconds": time.perf_counter() - start,
        "read_seconds": read,
        "rows": manifest["n_rows_read"],
        "users": manifest["n_users"],
        "items": manifest["n_items"],
        "interactions": manifest["n_interactions_kept"],
        "train_users": manifest["matrices"]["train"]["users"],
        "train_interactions": manifest["matrices"]["train"]["interactions"],
    }


def _time_min(fn, repeats: int, device: str = "cpu") -> float:
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def actor_matmuls(batch: int, n_items: int, hidden: int, latent: int) -> list[tuple]:
    """(name, m, k, n, dense) of every matrix multiply of one actor step (forward, grad input,
    grad weight per Linear). The first layer's are `dense=False`: ract computes them from the
    sparse batch (2 * nnz * hidden FLOPs each), the dense cost is what a dense batch costs."""
    out = []
    layers = [
        ("enc1", n_items, hidden),
        ("enc2", hidden, 2 * latent),
        ("dec1", latent, hidden),
        ("dec2", hidden, n_items),
    ]
    for name, d_in, d_out in layers:
        out.append((f"{name}.forward", batch, d_in, d_out, name != "enc1"))
        if name != "enc1":  # the input needs no gradient
            out.append((f"{name}.grad_input", batch, d_out, d_in, True))
        out.append((f"{name}.grad_weight", d_out, batch, d_in, name != "enc1"))
    return out


def phase_matmul(spec: dict) -> dict:
    """Dense matrix-multiply GFLOP/s at the actor's shapes, with the operand layouts autograd
    uses (transposed views), float32, this process's threads."""
    import torch

    torch.set_num_threads(spec["threads"])
    dev = spec["device"]
    rows = []
    for name, m, k, n, _ in actor_matmuls(spec["batch"], spec["n_items"], 600, 200):
        a = (
            torch.randn(k, m, device=dev).t()
            if name.endswith("grad_weight")
            else torch.randn(m, k, device=dev)
        )
        b = (
            torch.randn(n, k, device=dev).t()
            if name.endswith("forward")
            else torch.randn(k, n, device=dev)
        )
        seconds = _time_min(lambda: a @ b, spec["repeats"], dev)
        rows.append(
            {
                "name": name,
                "m": m,
                "k": k,
                "n": n,
                "seconds": seconds,
                "gflops": 2 * m * k * n / seconds / 1e9,
            }
        )
    return {"shapes": rows}


def phase_train(spec: dict) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    from ract.data.splits import load_split, sparse_rows
    from ract.model import critic_target
    from ract.checkpoint import build_actor, load_checkpoint
    from ract.train import stage_defaults, train_stage

    torch.set_num_threads(spec["threads"])
    stage = spec["stage"]
    data = load_split(spec["split"])
    overrides = {"epochs": spec["epochs"]}
    if stage == "critic_pretrain":
        overrides["min_steps"] = 0  # timing epochs, not fitting the critic
        overrides["validate_every"] = 0  # each epoch validated, as the other stages
    cfg = stage_defaults(stage, **overrides)
    start, cpu = time.perf_counter(), time.process_time()
    train_stage(
        data,
        cfg,
        out_checkpoint=spec["checkpoint"],
        history_path=spec["history"],
        pre_model_path=spec.get("start"),
        device=spec["device"],
    )
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    stage_peak_rss = _peak_rss()  # before the measurements below add to it
    on_gpu = torch.device(spec["device"]).type == "cuda"
    stage_peak_gpu = torch.cuda.max_memory_allocated() if on_gpu else None
    history = pd.read_csv(spec["history"])
    epochs = history[history["epoch"] > 0]
    out = {
        "seconds": total,
        "peak_rss_stage": stage_peak_rss,
        "peak_gpu_memory_stage": stage_peak_gpu,  # torch's allocations on the GPU, bytes
        # busy share of the threads: below 1 from serial code, or other load on the machine
        "cpu_utilisation": cpu / (total * spec["threads"]),
        "epochs": len(epochs),
        "train_seconds": float(epochs["train_seconds"].median()),
        "epoch_seconds": float(epochs["seconds"].median()),
        "validation_seconds": float((epochs["seconds"] - epochs["train_seconds"]).median()),
        "start_validation_seconds": float(history.loc[history["epoch"] == 0, "seconds"].iloc[0]),
        "batches": int(np.ceil(data.train.shape[0] / cfg.batch_size)),
        "train_users": int(data.train.shape[0]),
        "train_nnz": int(data.train.nnz),
    }
    if stage == "critic_pretrain":  # the critic's NDCG target alone, on training batches
        dev = spec["device"]
        actor = build_actor(load_checkpoint(spec["checkpoint"])).to(dev).train()
        gen = torch.Generator(device=dev).manual_seed(0)
        times = []
        with torch.no_grad():
            for b in range(min(8, out["batches"])):
                rows = np.arange(
                    b * cfg.batch_size, min((b + 1) * cfg.batch_size, data.train.shape[0])
                )
                res = actor(sparse_rows(data.train, rows, dev), gen)
                times.append(_time_min(lambda: critic_target(res, 100), 2, dev))
        out["target_seconds_per_batch"] = statistics.median(times)
    return out


def phase_evaluate(spec: dict) -> dict:
    import torch
    from ract.checkpoint import build_actor, load_checkpoint
    from ract.data.splits import load_split
    from ract.evaluate import evaluate_to_frames

    torch.set_num_threads(spec["threads"])
    data = load_split(spec["split"])
    actor = build_actor(load_checkpoint(spec["checkpoint"])).to(spec["device"])
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        _, summary = evaluate_to_frames(actor, data, "test", (20, 50, 100), device=spec["device"])
        times.append(time.perf_counter() - start)
    return {
        "seconds": min(times),
        "users": summary["n_users"],
        "users_per_second": summary["n_users"] / min(times),
        "ndcg@100": summary["metrics"]["ndcg@100"]["mean"],
    }


PHASES = {
    "raw": phase_raw,
    "prepare": phase_prepare,
    "matmul": phase_matmul,
    "train": phase_train,
    "evaluate": phase_evaluate,
}


def child_main(phase: str, spec: dict) -> None:
    start = time.perf_counter()
    result = PHASES[phase](spec)
    result.update(peak_rss=_peak_rss(), process_seconds=time.perf_counter() - start)
    print(json.dumps(result))


# ---- the parent: runs the phases, derives the figures, writes the results ---------------------


WAITS: dict[str, int] = {}  # how many measured processes' idle threads spun, or slept


def count_wait(env: dict, processes: int = 1) -> str:
    """How the idle threads of `processes` started with `env` wait, counted in WAITS."""
    policy = wait_of(env)
    WAITS[policy] = WAITS.get(policy, 0) + processes
    return policy


def run_phase(phase: str, spec: dict, threads: int) -> dict:
    env = phase_env(
        threads, os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        sys.exit(f"benchmark phase {phase} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start  # with interpreter start and imports
    result["omp_wait"] = count_wait(env)
    print(
        f"  {phase:9s} {spec.get('stage', '')[:15]:15s} {result['wall_seconds']:7.1f} s  "
        f"peak RSS {result['peak_rss'] / 2**30:.2f} GiB",
        flush=True,
    )
    return result


def interleaved_steps(split: str, cfg: dict, args, repeats: int = 3) -> dict:
    """Milliseconds per step of each stage, the three stages run back to back in one process
    and the fastest of `repeats` such processes kept: the stages' ratios then come from the
    same minutes of the machine, unlike the epochs above, which are minutes apart."""
    from levers import run_variant

    env = phase_env(args.threads)
    count_wait(env, repeats)
    batches, epochs = cfg["step_batches"], cfg["step_epochs"]
    best = {}
    for _ in range(repeats):
        ms = run_variant("", Path(split), batches, epochs, args.threads, env)
        best = {s: min(ms[s], best.get(s, ms[s])) for s in STAGES}
    print(
        f"  steps     {'':15s} " + ", ".join(f"{s} {best[s]:.0f} ms" for s in STAGES), flush=True
    )
    return best


def flops_per_epoch(train_users: int, train_nnz: int, n_items: int, batch: int) -> dict:
    """Matrix-multiply FLOPs of one actor epoch: as executed (sparse first layer) and as a
    dense batch would cost."""
    executed = dense = 0.0
    full, last = divmod(train_users, batch)
    for b, count in ((batch, full), (last, 1 if last else 0)):
        for _, m, k, n, is_dense in actor_matmuls(b, n_items, 600, 200):
            cost = 2.0 * m * k * n * count
            dense += cost
            executed += cost if is_dense else 0.0
    executed += 2 * (2.0 * train_nnz * 600)  # first layer: forward and weight gradient
    return {"executed": executed, "dense_equivalent": dense}


def matmul_rate(shapes: list[dict], n_items: int, batch: int) -> float:
    """GFLOP/s of the dense multiplies of one actor step at the measured speed of each shape
    (FLOP-weighted: total FLOPs over total time)."""
    flops = secs = 0.0
    for row, (_, m, k, n, is_dense) in zip(shapes, actor_matmuls(batch, n_items, 600, 200)):
        if is_dense:
            flops += 2.0 * m * k * n
            secs += row["seconds"]
    return flops / secs / 1e9


def bench_dataset(name: str, cfg: dict, args) -> dict:
    work = args.data_dir / name
    work.mkdir(parents=True, exist_ok=True)
    print(f"{name}:", flush=True)
    spec = {"data_dir": str(args.data_dir), "cache": str(args.cache), **cfg}
    raw = run_phase("raw", spec, args.threads)
    split = str(work / "split")
    prep = run_phase(
        "prepare",
        {"path": raw["path"], "format": raw["format"], "prepare": cfg["prepare"], "split": split},
        args.threads,
    )
    n_items, batch = prep["items"], 500
    mm = {
        "batch": batch,
        "n_items": n_items,
        "threads": args.threads,
        "repeats": 5,
        "device": args.device,
    }
    before = run_phase("matmul", mm, args.threads)
    train, start = {}, None
    for stage in STAGES:
        train[stage] = run_phase(
            "train",
            {
                "stage": stage,
                "split": split,
                "epochs": cfg["epochs"],
                "threads": args.threads,
                "device": args.device,
                "checkpoint": str(work / f"{stage}.pt"),
                "history": str(work / f"{stage}.csv"),
                "start": start,
            },
            args.threads,
        )
        start = str(work / f"{stage}.pt")
    after = run_phase("matmul", mm, args.threads)
    steps = interleaved_steps(split, cfg, args)
    ev = run_phase(
        "evaluate",
        {
            "split": split,
            "checkpoint": str(work / "actor_pretrain.pt"),
            "threads": args.threads,
            "repeats": 3,
            "device": args.device,
        },
        args.threads,
    )

    actor = train["actor_pretrain"]
    flops = flops_per_epoch(actor["train_users"], actor["train_nnz"], n_items, batch)
    rates = [matmul_rate(r["shapes"], n_items, batch) for r in (before, after)]
    achieved = flops["executed"] / actor["train_seconds"] / 1e9
    # the same from the interleaved steps: the users (and items) of their first batches
    import scipy.sparse as sp

    step_users = min(500 * cfg["step_batches"], actor["train_users"])
    step_nnz = sp.load_npz(Path(split) / "train.npz")[:step_users].nnz
    step_flops = flops_per_epoch(step_users, step_nnz, n_items, batch)["executed"]
    step_achieved = (
        step_flops / (steps["actor_pretrain"] / 1e3 * math.ceil(step_users / batch)) / 1e9
    )
    per_batch = {s: train[s]["train_seconds"] / train[s]["batches"] for s in STAGES}
    from ract.train import STAGE_DEFAULTS

    # one seed of RaCT's three stages at the study's defaults: each stage's epochs, extended to
    # its min_steps, at this run's seconds per epoch (validation included)
    study_epochs = {
        s: max(d["epochs"], math.ceil(d.get("min_steps", 0) / train[s]["batches"]))
        for s, d in STAGE_DEFAULTS.items()
    }
    return {
        "raw": raw,
        "prepare": prep,
        "train": train,
        "evaluate": ev,
        "steps": steps,
        "matmul": {
            "before": before["shapes"],
            "after": after["shapes"],
            "rate_before": rates[0],
            "rate_after": rates[1],
        },
        "figures": {
            "prepare_seconds": prep["seconds"],
            "prepare_peak_rss": prep["peak_rss"],
            **{f"{s}_epoch_seconds": train[s]["train_seconds"] for s in STAGES},
            **{
                f"{s}_users_per_second": train[s]["train_users"] / train[s]["train_seconds"]
                for s in STAGES
            },
            **{f"{s}_peak_rss": train[s]["peak_rss_stage"] for s in STAGES},
            **{f"{s}_peak_gpu_memory": train[s].get("peak_gpu_memory_stage") for s in STAGES},
            "one_seed_ract_hours": sum(study_epochs[s] * train[s]["epoch_seconds"] for s in STAGES)
            / 3600,
            **{f"{s}_cpu_utilisation": train[s]["cpu_utilisation"] for s in STAGES},
            **{
                f"{s}_validation_share": train[s]["validation_seconds"] / train[s]["epoch_seconds"]
                for s in STAGES
            },
            "actor_gflop_per_epoch": flops["executed"] / 1e9,
            "actor_dense_equivalent_gflop_per_epoch": flops["dense_equivalent"] / 1e9,
            "actor_gflops": achieved,
            "actor_dense_equivalent_gflops": flops["dense_equivalent"]
            / actor["train_seconds"]
            / 1e9,
            "matmul_gflops": statistics.mean(rates),
            "matmul_gflops_spread": abs(rates[0] - rates[1]),
            "actor_share_of_matmul_rate": achieved / statistics.mean(rates),
            "actor_step_gflops": step_achieved,
            "actor_step_share_of_matmul_rate": step_achieved / max(rates),
            "critic_over_actor": train["critic_pretrain"]["train_seconds"]
            / actor["train_seconds"],
            "finetune_over_actor": train["finetune"]["train_seconds"] / actor["train_seconds"],
            "critic_step_over_actor_step": steps["critic_pretrain"] / steps["actor_pretrain"],
            "finetune_step_over_actor_step": steps["finetune"] / steps["actor_pretrain"],
            "target_seconds_per_batch": train["critic_pretrain"]["target_seconds_per_batch"],
            "target_share_of_critic_step": train["critic_pretrain"]["target_seconds_per_batch"]
            / per_batch["critic_pretrain"],
            "target_share_of_finetune_step": train["critic_pretrain"]["target_seconds_per_batch"]
            / per_batch["finetune"],
            "evaluate_users_per_second": ev["users_per_second"],
            "evaluate_seconds_per_user_over_actor_step": (ev["seconds"] / ev["users"])
            / (actor["train_seconds"] / actor["train_users"]),
        },
    }


# ---- the overhead of the default study ----------------------------------------------------


def snakemake_jobs(log: str) -> list[dict]:
    """(rule, start, end, benchmark file) of every job in a Snakemake log (1 s resolution)."""
    from datetime import datetime

    jobs, stamp, current = {}, None, None
    for line in log.splitlines():
        if m := re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = {"rule": m.group(1), "start": stamp, "benchmark": None}
        elif current and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            jobs[m.group(1)] = current
        elif current and (m := re.match(r"^\s+benchmark: (\S+)$", line)):
            current["benchmark"] = m.group(1)
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            jobs[m.group(1)]["end"] = stamp
    return [job for job in jobs.values() if "end" in job]


def _covered(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def study_overhead(args) -> dict:
    """Run the default ml-100k study (`snakemake --cores 4`) in a clean clone of the last
    commit and split its time into time inside the training and evaluation loops and the rest
    (process start, imports, reading and writing, Snakemake's own scheduling)."""
    clone = Path(tempfile.mkdtemp(prefix="ract-study-"))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / "data").mkdir()
    (clone / "data" / "raw").symlink_to(args.cache.resolve())  # ml-100k already downloaded
    snakemake = Path(sys.executable).parent / "snakemake"
    env = {**os.environ, "PYTHONPATH": str(clone)}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(snakemake), "--cores", "4"], cwd=clone, capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"study failed in {clone}:\n{proc.stderr[-3000:]}")
    result = analyse_study(clone, wall, env)
    shutil.rmtree(clone)
    return result


def analyse_study(clone: Path, wall: float, env: dict) -> dict:
    import pandas as pd

    log = max((clone / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    eval_loop = _study_eval_loop(clone, env)
    rows, loops = [], []
    for job in snakemake_jobs(log):
        seconds, loop = job["end"] - job["start"], 0.0
        if job["benchmark"]:  # the job's own timing, finer than the log's
            seconds = float(pd.read_csv(clone / job["benchmark"], sep="\t")["s"].iloc[0])
            rel = Path(job["benchmark"]).relative_to("benchmarks")
            history = clone / "results" / rel.with_name(rel.stem + "_history.csv")
            if history.exists():  # training: every epoch and the epoch-0 validation
                loop = float(pd.read_csv(history)["seconds"].sum())
                end = _loop_end(clone / "logs" / rel.with_suffix(".log"), job["end"])
                loops.append((end - loop, end))
        if job["rule"] in ("evaluate", "evaluate_baseline"):
            loop = eval_loop
        rows.append(
            {
                "rule": job["rule"],
                "seconds": seconds,
                "loop_seconds": loop,
                "start": job["start"],
                "end": job["end"],
            }
        )
    frame = pd.DataFrame(rows)
    covered = _covered(list(zip(frame["start"], frame["end"])))
    alone = max(wall - covered, 0.0)  # Snakemake starting, building the DAG, between jobs
    study_start = frame["start"].min()
    in_some_loop = _covered([(max(a, study_start), b) for a, b in loops])
    job_seconds, loop_seconds = float(frame["seconds"].sum()), float(frame["loop_seconds"].sum())
    by_rule = frame.groupby("rule").agg(
        jobs=("seconds", "size"), seconds=("seconds", "sum"), loop_seconds=("loop_seconds", "sum")
    )
    return {
        "wall_seconds": wall,
        "jobs": len(frame),
        "job_seconds": job_seconds,
        "loop_seconds": loop_seconds,
        "snakemake_alone_seconds": alone,
        "parallelism": job_seconds / wall,
        "outside_loops_share": 1 - loop_seconds / (job_seconds + alone),
        # the other reading: wall time during which no training loop runs at all
        "no_loop_running_share": 1 - in_some_loop / wall,
        "eval_loop_seconds": eval_loop,
        "by_rule": by_rule.round(2).to_dict("index"),
    }


def _loop_end(log: Path, fallback: float) -> float:
    """When a training job's loop ended: the time of its log's 'done in' line (the job log
    has whole seconds; the middle of that second)."""
    from datetime import datetime

    day = datetime.fromtimestamp(fallback).strftime("%Y-%m-%d ")
    for line in reversed(log.read_text().splitlines() if log.exists() else []):
        if m := re.match(r"^(\d\d:\d\d:\d\d) ract\.train INFO \w+ done in", line):
            return datetime.strptime(day + m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + 0.5
    return fallback


def _study_eval_loop(clone: Path, env: dict) -> float:
    """Seconds of the evaluation loops of one evaluate job of the study, both splits (the jobs
    do not time theirs)."""
    code = (
        "import time, torch\n"
        "from ract.checkpoint import build_actor, load_checkpoint\n"
        "from ract.data.splits import load_split\n"
        "from ract.evaluate import evaluate_model\n"
        "torch.set_num_threads(2)\n"
        "data = load_split('results/ml-100k/split')\n"
        "actor = build_actor(load_checkpoint('results/ml-100k/main/seed1/finetune.pt'))\n"
        "evaluate_model(actor, data.test)\n"
        "start = time.perf_counter()\n"
        "for split in ('validation', 'test'):\n"
        "    evaluate_model(actor, data.eval_split(split))\n"
        "print(time.perf_counter() - start)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return float(out.stdout.strip())


# ---- results ----------------------------------------------------------------------------------


def write_results(results: dict, out: Path) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [{"dataset": name, **r["figures"]} for name, r in results["datasets"].items()]
    pd.DataFrame(rows).to_csv(out / "latest.csv", index=False)
    (out / "latest.md").write_text(summary_markdown(results, out))


def summary_markdown(results: dict, out: Path = HERE / "results") -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark results ({results['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; Python {m['python']}, torch "
        f"{m['torch']} ({m['blas']}), {results['threads']} threads, device "
        f"{results.get('device', 'cpu')}; load average "
        f"{results['load_before']} before, {results['load_after']} after.",
        "",
    ]
    if results.get("omp_wait"):
        lines += [
            "Idle OpenMP threads of the measured processes (as a workflow job's, "
            "`ract.threads`): "
            + ", ".join(f"{k} in {v}" for k, v in results["omp_wait"].items())
            + ".",
            "",
        ]
    if results["datasets"]:
        lines += dataset_table(results)
    if "study" in results:
        s = results["study"]
        lines += [
            "",
            f"Default ml-100k study (`snakemake --cores 4`, {s['jobs']} jobs): "
            f"{s['wall_seconds']:.0f} s wall; {s['job_seconds']:.0f} s of jobs "
            f"(parallelism {s['parallelism']:.2f}) and {s['snakemake_alone_seconds']:.0f}"
            f" s of Snakemake alone, of which {s['loop_seconds']:.0f} s inside the "
            "training and evaluation loops: "
            f"**{s['outside_loops_share']:.0%} of the study's job time is outside the "
            f"loops**; no training loop runs during {s['no_loop_running_share']:.0%} of "
            "its wall time.",
            "",
            "| rule | jobs | seconds | in loops |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {rule} | {r['jobs']} | {r['seconds']:.0f} | {r['loop_seconds']:.0f} |"
            for rule, r in s["by_rule"].items()
        ]
    lines += further_measurements(results["machine"], results.get("device", "cpu"), out)
    return "\n".join(lines) + "\n"


# The other benchmarks' result pages, gathered under this one so that latest.md carries every
# figure the README cites; each stays the output of its own script (named in its first lines).
FURTHER = [
    ("gpu.md", "GPU"),
    ("precision-speed.md", "bf16 against fp32: speed"),
    ("precision-quality.md", "bf16 against fp32: quality"),
    ("memory.md", "Peak memory against RecBole"),
    ("ease_memory.md", "EASE: estimate against measured peak"),
    ("validate-every.md", "Validation cadence"),
    ("peer.md", "End to end against RecBole"),
]


def further_measurements(machine: dict, device: str, out: Path = HERE / "results") -> list[str]:
    lines = []
    for name, title in FURTHER:
        path = out / name
        if path.exists():
            body = path.read_text().strip().split("\n")
            if body[0].startswith("# "):
                body = body[1:]  # its own title: this page gives one
            body = [("#" + line) if line.startswith("#") else line for line in body]
            lines += ["", f"## {title} (from `benchmarks/results/{name}`)", *body]
        elif name == "gpu.md" and not machine["gpu"] and device == "cpu":
            lines += [
                "",
                "## GPU",
                "",
                "No GPU was available to these measurements, so no CUDA figures exist yet: the "
                "CUDA path (`device: cuda`, the gpu profile) has not run.",
            ]
    return lines


def dataset_table(results: dict) -> list[str]:
    names = list(results["datasets"])
    fig = {n: results["datasets"][n]["figures"] for n in names}
    prep = {n: results["datasets"][n]["prepare"] for n in names}
    gib = 2**30

    def row(label, fmt, key=None, fn=None):
        cells = [fmt.format(fn(n) if fn else fig[n][key]) for n in names]
        return f"| {label} | " + " | ".join(cells) + " |"

    def pair(label, key, bracketed, fmt):  # "value (bracketed value)"
        return row(
            label,
            "{}",
            fn=lambda n: f"{fmt.format(fig[n][key])} ({fmt.format(fig[n][bracketed])})",
        )

    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        row(
            "users x items (interactions)",
            "{}",
            fn=lambda n: (
                f"{prep[n]['users']:,} x {prep[n]['items']:,} ({prep[n]['interactions']:,})"
            ),
        ),
        row(
            "prepare: seconds (of which reading)",
            "{}",
            fn=lambda n: f"{prep[n]['seconds']:.1f} ({prep[n]['read_seconds']:.1f})",
        ),
        row("prepare: peak RSS GiB", "{:.2f}", fn=lambda n: prep[n]["peak_rss"] / gib),
    ]
    for stage in STAGES:
        lines += [
            row(
                f"{stage}: s/epoch (users/s)",
                "{}",
                fn=lambda n, s=stage: (
                    f"{fig[n][s + '_epoch_seconds']:.2f} ({fig[n][s + '_users_per_second']:,.0f})"
                ),
            ),
            row(f"{stage}: validation share of epoch", "{:.0%}", f"{stage}_validation_share"),
            row(
                f"{stage}: peak RSS GiB",
                "{:.2f}",
                fn=lambda n, s=stage: fig[n][s + "_peak_rss"] / gib,
            ),
            *(
                [
                    row(
                        f"{stage}: peak GPU memory GiB",
                        "{:.2f}",
                        fn=lambda n, s=stage: (fig[n].get(s + "_peak_gpu_memory") or 0) / gib,
                    )
                ]
                if any(fig[n].get(stage + "_peak_gpu_memory") for n in names)
                else []
            ),
            row(
                f"{stage}: CPU busy (of {results['threads']} threads)",
                "{:.0%}",
                f"{stage}_cpu_utilisation",
            ),
        ]
    return lines + [
        pair(
            "actor epoch: GFLOP executed (dense equivalent)",
            "actor_gflop_per_epoch",
            "actor_dense_equivalent_gflop_per_epoch",
            "{:,.0f}",
        ),
        pair(
            "actor epoch: GFLOP/s executed (dense equivalent)",
            "actor_gflops",
            "actor_dense_equivalent_gflops",
            "{:.1f}",
        ),
        pair(
            "dense matmul GFLOP/s, same shapes (spread)",
            "matmul_gflops",
            "matmul_gflops_spread",
            "{:.1f}",
        ),
        pair(
            "**actor / matmul rate: epoch (best steps)**",
            "actor_share_of_matmul_rate",
            "actor_step_share_of_matmul_rate",
            "{:.0%}",
        ),
        pair(
            "critic / actor: epoch (step, interleaved)",
            "critic_over_actor",
            "critic_step_over_actor_step",
            "{:.2f}",
        ),
        pair(
            "finetune / actor: epoch (step, interleaved)",
            "finetune_over_actor",
            "finetune_step_over_actor_step",
            "{:.2f}",
        ),
        row(
            "NDCG target per batch, ms",
            "{:.1f}",
            fn=lambda n: fig[n]["target_seconds_per_batch"] * 1e3,
        ),
        row(
            "NDCG target share of critic / finetune step",
            "{}",
            fn=lambda n: (
                f"{fig[n]['target_share_of_critic_step']:.0%} / "
                f"{fig[n]['target_share_of_finetune_step']:.0%}"
            ),
        ),
        row("evaluation, top-100 of all items: users/s", "{:,.0f}", "evaluate_users_per_second"),
        row(
            "evaluation cost per user / actor step per user",
            "{:.2f}",
            "evaluate_seconds_per_user_over_actor_step",
        ),
        *(
            [
                row(
                    "one seed of RaCT's 3 stages at the study's epochs: hours (estimate)",
                    "{:.2f}",
                    "one_seed_ract_hours",
                )
            ]
            if all("one_seed_ract_hours" in fig[n] for n in names)
            else []
        ),
    ]


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--datasets",
        nargs="*",
        choices=sorted(DATASETS),
        default=list(DATASETS),
        help="(default: all; none with --study: only the study)",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda: training, evaluation and the matmul rate"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads in every phase (default: all cores)",
    )
    for option, default, what in (  # the folders it reads and writes
        ("--data-dir", HERE / "data", "generated data, splits and checkpoints"),
        ("--cache", ROOT / "data" / "raw", "download cache of the known data sets"),
        ("--out", HERE / "results", "where latest.json/.csv/.md go"),
    ):
        parser.add_argument(
            option, type=Path, default=default, help=what + " (default: %(default)s)"
        )
    parser.add_argument(
        "--study",
        action="store_true",
        help="also run the default ml-100k study and measure its overhead",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="only rewrite latest.md from latest.json and the other result pages",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        child_main(args.phase, json.loads(args.spec))
        return 0
    if args.summary_only:
        results = json.loads((args.out / "latest.json").read_text())
        (args.out / "latest.md").write_text(summary_markdown(results, args.out))
        print((args.out / "latest.md").read_text())
        return 0
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "threads": args.threads,
        "device": args.device,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "datasets": {},
    }
    for name in args.datasets:
        results["datasets"][name] = bench_dataset(name, DATASETS[name], args)
    if args.study:
        print("study:", flush=True)
        results["study"] = study_overhead(args)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["omp_wait"] = WAITS
    write_results(results, args.out)
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End to end against RecBole 1.2.1's RaCT on ml-100k: wall time, both measured in one run.

    python benchmarks/peer.py                       # 2 rounds, RecBole's venv made if missing
    python benchmarks/peer.py --peer-venv /path/to/venv --rounds 3
    python benchmarks/peer.py --dry-run             # print the commands and configs, run nothing

The project: the whole workflow (`snakemake --cores THREADS`), from obtaining ml-100k (the
offline route, from a download cache filled once before the first round) to the comparison
report, in a fresh folder with its own config file: protocol weak (RecBole's per-user random
80/10/10 split), every rating kept (`rating_threshold: null`, as RecBole reads ml-100k), one
seed, RaCT only (`models: []`), the epochs below for each stage, the critic's `min_steps: 0`
so that its epochs are those epochs, and the project's defaults otherwise. With
`--precisions fp32 bf16` (the default) each round runs that study twice, once per `precision`
setting: the default float32, and bfloat16 matrix multiplies in training (README,
Performance); RecBole has no such setting and trains in float32.

RecBole: its three RaCT stages as three processes, as its documentation runs them
(`run_recbole(model="RaCT", dataset="ml-100k", ...)`, the ml-100k copy inside its wheel):
actor_pretrain (pretrain_epochs = the actor's epochs), critic_pretrain (the critic's epochs,
learning_rate 1e-4, from the actor's checkpoint), finetune (`epochs` = finetune's epochs,
learning_rate 2e-6, from the critic's checkpoint), each with `train_neg_sample_args: None`;
`stopping_step` is set above the finetune epochs so that it runs them all. Its other defaults
stay: train_batch_size 2048 (ml-100k's 943 users are one batch), validation of the finetune
stage every epoch (eval_step 1) on MRR@10, test metrics at k = 10, seed 2020, save_step =
each pretraining stage's epochs (its checkpoint is written once, at the end).

The sides alternate (project fp32, project bf16, RecBole, project fp32, ...), each
`--threads` threads. Writes benchmarks/results/peer.md (and .json): wall seconds per side and
round, per stage where the side records it, the ratios, each side's test NDCG (the project's
NDCG@100 on its test split, RecBole's NDCG@10 on its own: the splits differ, for information
only), load averages, commands and versions.

RecBole's venv (default benchmarks/.peer-venv, ignored by git) is made if missing:
torch==2.13.0 (CPU) and recbole==1.2.1, then numpy 1.26.4, pandas 2.1.4, scipy 1.11.4 and
setuptools<70 (ray, which recbole imports, needs pkg_resources). Its checkpoints pickle
RecBole's Config, so its stages run with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import script_parser, write_results  # beside this script

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = [
    ["torch==2.13.0", "recbole==1.2.1"],
    ["numpy==1.26.4", "pandas==2.1.4", "scipy==1.11.4", "setuptools<70"],
]
PEER_STAGE = """\
import json, sys, time
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from recbole.quick_start import run_recbole
start = time.perf_counter()
result = run_recbole(model="RaCT", dataset="ml-100k", config_dict=spec["config"])
print("PEER-RESULT " + json.dumps({
    "seconds_in_run_recbole": time.perf_counter() - start,
    "test": {k: float(v) for k, v in (result.get("test_result") or {}).items()},
}))
"""


def parse_args(argv=None):
    parser = script_parser(__doc__)
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=ROOT / "benchmarks" / ".peer-venv",
        help="RecBole's venv, made here if missing (default: benchmarks/.peer-venv)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="project, RecBole pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--actor-epochs", type=int, default=150)
    parser.add_argument("--critic-epochs", type=int, default=50)
    parser.add_argument("--finetune-epochs", type=int, default=50)
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="the project's `precision` settings, each a study of its own per round",
    )
    parser.add_argument("--pip-timeout", type=int, default=60, help="pip's --timeout, seconds")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/peer")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands and configs, run nothing"
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "threads", "actor_epochs", "critic_epochs", "finetune_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an integer >= 1")
    return args


def fail(message: str):
    sys.exit(f"peer.py: error: {message}")


# ---- RecBole ----------------------------------------------------------------------------------


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def peer_ready(venv: Path) -> bool:
    python = peer_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import recbole, torch, ray.tune"],
        capture_output=True,
        env=peer_env(1),
    )
    return probe.returncode == 0


def make_peer_venv(venv: Path, pip_timeout: int) -> None:
    """RecBole's venv by the recipe of the module docstring; one line if pip fails."""
    log = venv.with_name(venv.name + "-install.log")
    print(f"making RecBole's venv in {venv} (log: {log})", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)]] + [
        [str(peer_python(venv)), "-m", "pip", "install", "--timeout", str(pip_timeout), *pkgs]
        for pkgs in PEER_PACKAGES
    ]
    with open(log, "w") as f:
        for cmd in steps:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                fail(
                    f"installing RecBole into {venv} failed ({' '.join(cmd[-2:])}: exit "
                    f"{r.returncode}); see {log}, or give a ready venv with --peer-venv"
                )
    if not peer_ready(venv):
        fail(f"{venv}: recbole does not import after installing; see {log}")


def peer_env(threads: int) -> dict:
    return {
        **os.environ,
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def peer_stages(args, work: Path) -> list[tuple[str, dict]]:
    """(stage, RecBole config_dict) of RecBole's three runs."""
    saved = str(work / "saved")
    common = {
        "train_neg_sample_args": None,
        "checkpoint_dir": saved,
        "show_progress": False,
    }
    a, c, f = args.actor_epochs, args.critic_epochs, args.finetune_epochs
    return [
        (
            "actor_pretrain",
            {**common, "train_stage": "actor_pretrain", "pretrain_epochs": a, "save_step": a},
        ),
        (
            "critic_pretrain",
            {
                **common,
                "train_stage": "critic_pretrain",
                "pretrain_epochs": c,
                "save_step": c,
                "pre_model_path": f"{saved}/RaCT-ml-100k-{a}.pth",
                "learning_rate": 1e-4,
            },
        ),
        (
            "finetune",
            {
                **common,
                "train_stage": "finetune",
                "epochs": f,
                "stopping_step": f + 1,
                "pre_model_path": f"{saved}/RaCT-ml-100k-{c}.pth",
                "learning_rate": 2e-6,
            },
        ),
    ]


def run_peer(args, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stages, results = {}, {}
    t0 = time.perf_counter()
    for stage, config in peer_stages(args, work):
        spec = json.dumps({"config": config, "threads": args.threads})
        s0 = time.perf_counter()
        r = subprocess.run(
            [str(peer_python(args.peer_venv)), "-c", PEER_STAGE, spec],
            cwd=work,
            env=peer_env(args.threads),
            capture_output=True,
            text=True,
        )
        stages[stage] = time.perf_counter() - s0
        (work / f"{stage}.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            fail(f"RecBole's {stage} failed (exit {r.returncode}): {tail}; log {work}/{stage}.log")
        line = next(x for x in r.stdout.splitlines() if x.startswith("PEER-RESULT "))
        results[stage] = json.loads(line.split(" ", 1)[1])
    return {
        "seconds": time.perf_counter() - t0,
        "stages": stages,
        "test": results["finetune"]["test"],
        "test_after_actor": results["actor_pretrain"]["test"],
    }


# ---- the project ------------------------------------------------------------------------------


def project_config(args, precision: str = "fp32") -> dict:
    return {
        "precision": precision,
        "datasets": {
            "ml-100k": {
                "source": "ml-100k",
                "offline": True,
                "prepare": {"protocol": "weak", "rating_threshold": None},
            }
        },
        "seeds": [1],
        "models": [],
        "stages": {
            "actor_pretrain": {"epochs": args.actor_epochs},
            "critic_pretrain": {"epochs": args.critic_epochs, "min_steps": 0},
            "finetune": {"epochs": args.finetune_epochs},
        },
    }


def snakemake_command(args, work: Path) -> list[str]:
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    return [
        snakemake,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "peer.yaml"),
        "--cores",
        str(args.threads),
        "--quiet",
    ]


def fill_cache(cache: Path) -> None:
    """ml-100k in a download cache, once: each round's obtain_data job finds it there."""
    if not (cache / "ml-100k").is_dir():
        sys.path.insert(0, str(ROOT))
        from ract.data.sources import fetch_dataset

        fetch_dataset("ml-100k", ROOT / "data" / "raw", offline=True)
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "data" / "raw" / "ml-100k", cache / "ml-100k")


def run_project(args, work: Path, cache: Path, precision: str) -> dict:
    import yaml

    shutil.rmtree(work, ignore_errors=True)
    (work / "data" / "raw").mkdir(parents=True)
    shutil.copytree(cache / "ml-100k", work / "data" / "raw" / "ml-100k")
    config = project_config(args, precision)
    (work / "peer.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    r = subprocess.run(snakemake_command(args, work), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / "snakemake.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        fail(f"the project's workflow failed (exit {r.returncode}); log {work}/snakemake.log")
    jobs = {}
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        jobs[tsv.stem] = float(lines[1].split("\t")[0])
    run = work / "results" / "ml-100k" / "main" / "seed1" / "eval"
    test = json.loads((run / "finetune_test_summary.json").read_text())["metrics"]
    actor = json.loads((run / "actor_pretrain_test_summary.json").read_text())["metrics"]
    return {
        "seconds": seconds,
        "jobs": jobs,
        "test": {"ndcg@100": test["ndcg@100"]["mean"]},
        "test_after_actor": {"ndcg@100": actor["ndcg@100"]["mean"]},
    }


# ---- report -----------------------------------------------------------------------------------


def versions(args) -> dict:
    import snakemake
    import torch

    peer = {}
    if peer_python(args.peer_venv).exists():
        r = subprocess.run(
            [
                str(peer_python(args.peer_venv)),
                "-c",
                "import importlib.metadata as m; import json; print(json.dumps({p: m.version(p) "
                "for p in ('recbole', 'torch', 'numpy', 'pandas', 'scipy')}))",
            ],
            capture_output=True,
            text=True,
        )
        peer = json.loads(r.stdout) if r.returncode == 0 else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "project": {
            "commit": commit,
            "torch": torch.__version__,
            "snakemake": snakemake.__version__,
        },
        "peer": peer,
    }


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def markdown(res: dict) -> str:
    proj, peer = res["project"], res["peer"]
    q = median([r["seconds"] for r in peer])
    e = res["epochs"]
    names = [f"project {p}" for p in proj]
    lines = [
        "# End to end against RecBole's RaCT (ml-100k)",
        "",
        f"`{res['command']}` ({res['date']}, commit {res['versions']['project']['commit']}); "
        f"{res['machine']}; {res['threads']} threads each; load average "
        f"{res['load_before']:.2f} before, {res['load_after']:.2f} after. Epochs: actor "
        f"{e['actor']}, critic {e['critic']}, finetune {e['finetune']}, on both sides. "
        f"Rounds: {res['rounds']['done']} of the {res['rounds']['asked']} asked; each round "
        f"runs {', '.join(names)} (the `precision` setting; RecBole is float32), then RecBole.",
        "",
        "| round | "
        + " | ".join(f"{n} s" for n in names)
        + " | RecBole s | "
        + " | ".join(f"RecBole / {n}" for n in names)
        + " |",
        "|---|" + "---|" * (2 * len(names) + 1),
    ]
    for i, b in enumerate(peer):
        ours = [runs[i]["seconds"] for runs in proj.values()]
        lines.append(
            f"| {i + 1} | "
            + " | ".join(f"{a:.1f}" for a in ours)
            + f" | {b['seconds']:.1f} | "
            + " | ".join(f"{b['seconds'] / a:.2f}x" for a in ours)
            + " |"
        )
    ours = [median([r["seconds"] for r in runs]) for runs in proj.values()]
    lines += [
        "| median | "
        + " | ".join(f"{a:.1f}" for a in ours)
        + f" | {q:.1f} | "
        + " | ".join(f"**{q / a:.2f}x**" for a in ours)
        + " |",
        "",
    ]
    for p, runs in proj.items():
        lines.append(
            f"Per job, project {p} (Snakemake's benchmark files; median over rounds, seconds): "
            + ", ".join(
                f"{job} {median([r['jobs'][job] for r in runs if job in r['jobs']]):.1f}"
                for job in runs[0]["jobs"]
            )
            + "."
        )
        lines.append("")
    lines += [
        "Per stage, RecBole (each a process; median, seconds): "
        + ", ".join(
            f"{stage} {median([r['stages'][stage] for r in peer]):.1f}"
            for stage in peer[0]["stages"]
        )
        + ".",
        "",
        "Test ranking quality, for information (the splits differ: each side draws its own "
        "80/10/10): "
        + "; ".join(
            f"project {p} NDCG@100 {median([r['test']['ndcg@100'] for r in runs]):.4f} after "
            f"finetuning ({median([r['test_after_actor']['ndcg@100'] for r in runs]):.4f} "
            "after the actor)"
            for p, runs in proj.items()
        )
        + "; RecBole NDCG@10 (its default k) "
        f"{median([r['test']['ndcg@10'] for r in peer]):.4f} after finetuning "
        f"({median([r['test_after_actor']['ndcg@10'] for r in peer]):.4f} after the actor).",
        "",
        f"Versions: project torch {res['versions']['project']['torch']}, snakemake "
        f"{res['versions']['project']['snakemake']}; RecBole's venv "
        + ", ".join(f"{k} {v}" for k, v in res["versions"]["peer"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        work = args.work or Path("WORK")
        print("project:", " ".join(snakemake_command(args, work / "project")))
        for precision in args.precisions:
            print(f"project config {precision}:", json.dumps(project_config(args, precision)))
        for stage, config in peer_stages(args, work / "peer"):
            print(f"RecBole {stage}:", json.dumps(config))
        print(
            "RecBole's venv:",
            args.peer_venv,
            "ready"
            if peer_ready(args.peer_venv)
            else "missing: would be made with " + "; ".join(" ".join(p) for p in PEER_PACKAGES),
        )
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="ract-peer-"))
    if not peer_ready(args.peer_venv):
        make_peer_venv(args.peer_venv, args.pip_timeout)
    cache = work / "cache"
    fill_cache(cache)
    load_before = os.getloadavg()
    proj, peer = {p: [] for p in args.precisions}, []
    for i in range(1, args.rounds + 1):
        for precision, runs in proj.items():
            runs.append(run_project(args, work / "project", cache, precision))
            print(f"round {i} project {precision}: {runs[-1]['seconds']:.1f} s", flush=True)
        peer.append(run_peer(args, work / "peer"))
        print(f"round {i} RecBole: {peer[-1]['seconds']:.1f} s", flush=True)
        # after every round: a run stopped later keeps the rounds it finished
        ratio = write(args, argv, load_before, proj, peer, rounds_done=i)
    for precision, r in ratio.items():
        print(f"RecBole / project ({precision}) wall time: {r:.2f}x")
    return 0


def write(args, argv, load_before, proj, peer, rounds_done) -> dict[str, float]:
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/peer.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}",
        "threads": args.threads,
        "rounds": {"asked": args.rounds, "done": rounds_done},
        "epochs": {
            "actor": args.actor_epochs,
            "critic": args.critic_epochs,
            "finetune": args.finetune_epochs,
        },
        "load_before": load_before[0],
        "load_after": os.getloadavg()[0],
        "load_before_1_5_15": list(load_before),
        "load_after_1_5_15": list(os.getloadavg()),
        "project_config": {p: project_config(args, p) for p in args.precisions},
        "project_command": snakemake_command(args, Path("WORK")),
        "peer_stages": peer_stages(args, Path("WORK")),
        "versions": versions(args),
        "project": proj,
        "peer": peer,
    }
    res["ratio_median"] = {
        p: median([r["seconds"] for r in peer]) / median([r["seconds"] for r in runs])
        for p, runs in proj.items()
    }
    write_results(args.out, res, markdown)
    return res["ratio_median"]


if __name__ == "__main__":
    sys.exit(main())

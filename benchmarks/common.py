"""What the benchmark scripts share: their argument parser, the record of the machine they ran
on, the environment of a measured process, and the `ract` package of another git revision to
compare this code with."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from ract.threads import SPIN_VARIABLE, jobs_fit_cpus, set_wait_policy

ROOT = Path(__file__).resolve().parents[1]


def script_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark script's parser: its module docstring, as written, is the help."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def write_results(out: Path, results: dict, markdown) -> None:
    """`out`.json (the results) and `out`.md (`markdown(results)`, also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    print(text, flush=True)


def phase_env(threads: int, pythonpath: str | Path = ROOT) -> dict:
    """The environment of a measured process of `threads` threads with the `ract` package of
    `pythonpath`: its idle threads wait as a workflow job's do (`ract.threads`: spinning a
    moment where `threads` fit the CPUs and the machine is not busy, else sleeping at once;
    an `OMP_WAIT_POLICY` of the caller's is kept), so that its seconds are a job's."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(pythonpath),
        SPIN_VARIABLE: "1" if jobs_fit_cpus(threads) else "0",
    }
    set_wait_policy(env)
    return env


def wait_of(env: dict) -> str:
    """How the idle OpenMP threads of a process started with `env` wait: "spin" (a moment,
    the runtime's default) or the policy `env` sets."""
    return env.get("OMP_WAIT_POLICY", "spin")


def machine() -> dict:
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        None,
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def ract_of(revision: str | None) -> tempfile.TemporaryDirectory:
    """A temporary folder holding the `ract` package of a git revision (empty without one),
    to put on PYTHONPATH and compare that code with this one."""
    folder = tempfile.TemporaryDirectory(prefix="ract-baseline-")
    if revision:
        archive = subprocess.run(
            ["git", "archive", revision, "ract"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder.name], input=archive, check=True)
    return folder

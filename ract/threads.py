"""How a job's idle OpenMP threads wait. Standard library only: Snakemake reads it at parse
time, and each rule script before torch loads (the OpenMP runtime reads its settings once).

Spinning for a moment before sleeping, the OpenMP runtime's default, made training on ml-100k
15-30% faster than sleeping at once (`OMP_WAIT_POLICY=PASSIVE`): a 2-thread critic stage took
2.3-2.6 s against 3.3 s, the actor 13.4-14.7 s against 15.7-17.3 s (2 cores). It is only safe
while no two jobs share a core: two 2-thread critic stages on 2 cores took 12-14 s each with
spinning, 4.5-4.8 s with passive waiting. Snakemake never runs jobs claiming more threads
together than `--cores`, so a workflow run whose `--cores` is within the CPUs it may use lets
its jobs spin; one that asks for more has them sleep. So does a job that starts on a machine
already busy with other work (more runnable threads than CPUs): beside a RecBole run and a
2-thread training process (load average 4.5 on 2 cores), the ml-100k study took 221 s with
spinning jobs and 96 s with sleeping ones.
"""

from __future__ import annotations

import os
import time

SPIN_VARIABLE = "RACT_OMP_SPIN"  # "1": this run's jobs fit its CPUs (set by the workflow)
LOADAVG = "/proc/loadavg"  # Linux: its fourth field is runnable/all threads


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the system has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def jobs_fit_cpus(cores: int | None) -> bool:
    """Whether jobs claiming at most `cores` threads together (Snakemake's `--cores`; None
    where the run does not say) can never share a core."""
    return cores is not None and cores <= usable_cpus()


def cpus_busy(samples: int = 5, interval: float = 0.004) -> bool:
    """Whether the machine had more runnable threads than CPUs in each of a few samples of
    LOADAVG, a few ms apart (about 20 ms when busy; one read when not); False where the system
    does not say."""
    cpus = os.cpu_count() or 1
    for i in range(samples):
        try:
            with open(LOADAVG) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return False
        if running <= cpus:
            return False
        if i < samples - 1:
            time.sleep(interval)
    return True


def set_wait_policy(environ=os.environ) -> None:
    """Before torch loads: the runtime's default where the workflow said its jobs fit its CPUs
    and the machine is not busy with other work, else passive waiting. An `OMP_WAIT_POLICY`
    already set is the user's, and is kept."""
    if environ.get(SPIN_VARIABLE) != "1" or cpus_busy():
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

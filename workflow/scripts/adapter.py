"""Shared by the rule scripts: log to the rule's log file; turn any failure into one line
(`ract.errors.error_line`) on stderr and in that log, and a failed job, the log also keeping
the traceback of anything but bad input; record what a finished job read and wrote
(`ract.provenance`); end a finished job's process without Python's teardown."""

import logging
import os
import re
import sys
from pathlib import Path

# Jobs run the `ract` beside this workflow, the code whose hash the rules' `code` params carry:
# Snakemake appends that folder to a job's sys.path, after site-packages, where another `ract`
# (an editable install of another checkout, a released version) would otherwise win.
WORKFLOW_ROOT = Path(__file__).resolve().parents[2]
if (WORKFLOW_ROOT / "ract" / "__init__.py").is_file():
    sys.path.insert(0, str(WORKFLOW_ROOT))

# How idle OpenMP threads wait, before torch loads: spinning a moment where the workflow's
# jobs cannot share a core, else sleeping at once (ract/threads.py). Import this module first.
from ract.threads import set_wait_policy  # noqa: E402

set_wait_policy()

from ract.errors import RactError, error_line  # noqa: E402
from ract.provenance import JobRunning, job_lock, producer, record_job  # noqa: E402

log = logging.getLogger("ract")


def run(snakemake, body):
    logging.basicConfig(
        filename=snakemake.log[0],
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with job_lock(snakemake.output):
            body()
    except JobRunning as exc:
        fail(
            f"ract: error: another process{f' (pid {exc.pid})' if exc.pid else ''} is still "
            "running this job, left by a Snakemake run that was stopped; wait for it to end "
            f"or stop it{f' (kill {exc.pid})' if exc.pid else ''}, then run again"
        )
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line
        line = error_line(exc, f"full traceback in {snakemake.log[0]}")
        if isinstance(exc, RactError):
            line += remedy(line, snakemake.input)
        # the line, then (unless it is bad input) the traceback below it in the log
        fail(line, exc_info=not isinstance(exc, RactError))
    record_job(snakemake.rule, snakemake.input, snakemake.output)
    leave()


def leave():
    """End the finished job's process now. Python's own exit would then take every module
    and object apart, which nothing here needs (the outputs are written and closed): 0.3 to
    0.45 s of each job that imported torch, a quarter of an evaluation job. Only what is still
    buffered is kept: the log (`logging.shutdown`, which is also all that `atexit` holds for
    a job, matplotlib's and Pillow's caches aside), stdout and stderr."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def fail(line, exc_info=False):
    log.error("%s", line, exc_info=exc_info)
    print(line, file=sys.stderr)
    sys.exit(1)


def remedy(line, inputs):
    """For an input this workflow made that turns out damaged or incomplete, which rule makes it
    and how to have it remade (the command-line advice in the message does not apply here)."""
    folders = {str(Path(p).parent) for p in inputs}
    for path in re.findall(r"(?:[\w.@+-]+/)+[\w.@+-]+", line):
        if path in inputs or str(Path(path).parent) in folders:
            rule = producer(path)
            if rule:
                return (
                    f"; rule {rule} makes it here: delete {path} and run again to remake it "
                    "and everything made from it"
                )
    return ""

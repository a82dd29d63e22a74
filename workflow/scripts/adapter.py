"""Shared by the rule scripts: log to the rule's log file; turn any failure into one line
(`ract.errors.error_line`) on stderr and in that log, and a failed job, the log also keeping
the traceback of anything but bad input; record what a finished job read and wrote
(`ract.provenance`)."""

import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning. Set before torch loads: with spinning, two
# 2-thread jobs on 2 cores ran 8x slower each than one alone (critic stage, ml-100k); with
# passive waiting, no slower than two 1-thread jobs. Import this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ract.errors import RactError, error_line  # noqa: E402
from ract.provenance import record_job  # noqa: E402

log = logging.getLogger("ract")


def run(snakemake, body):
    logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line
        line = error_line(exc, f"full traceback in {snakemake.log[0]}")
        # the line, then (unless it is bad input) the traceback below it in the log
        log.error("%s", line, exc_info=not isinstance(exc, RactError))
        print(line, file=sys.stderr)
        sys.exit(1)
    record_job(snakemake.rule, snakemake.input, snakemake.output)

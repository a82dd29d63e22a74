"""Shared by the rule scripts: log to the rule's log file, turn a RactError into one line in
that log and a failed job, never a traceback, and record what a finished job read and wrote
(`ract.provenance`)."""

import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning. Set before torch loads: with spinning, two
# 2-thread jobs on 2 cores ran 8x slower each than one alone (critic stage, ml-100k); with
# passive waiting, no slower than two 1-thread jobs. Import this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ract.errors import RactError  # noqa: E402
from ract.provenance import record_job  # noqa: E402

log = logging.getLogger("ract")


def run(snakemake, body):
    logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        body()
    except RactError as exc:
        log.error("%s", exc)
        print(f"ract: error: {exc}", file=sys.stderr)
        sys.exit(1)
    record_job(snakemake.rule, snakemake.input, snakemake.output)

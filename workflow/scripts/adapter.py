"""Shared by the rule scripts: log to the rule's log file and turn a RactError into one line
in that log and a failed job, never a traceback."""

import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning. Set before torch loads: with spinning, two
# 2-thread jobs on 2 cores ran 8x slower each than one alone (critic stage, ml-100k); with
# passive waiting, no slower than two 1-thread jobs. Import this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ract.errors import RactError  # noqa: E402


def run(snakemake, body):
    logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        body()
    except RactError as exc:
        logging.getLogger("ract").error("%s", exc)
        print(f"ract: error: {exc}", file=sys.stderr)
        sys.exit(1)

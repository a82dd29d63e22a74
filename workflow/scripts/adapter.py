"""Shared by the rule scripts: log to the rule's log file and turn any failure into one line
(`ract.errors.error_line`) on stderr and in that log, and a failed job; the log also keeps
the traceback of anything but bad input."""

import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning. Set before torch loads: with spinning, two
# 2-thread jobs on 2 cores ran 8x slower each than one alone (critic stage, ml-100k); with
# passive waiting, no slower than two 1-thread jobs. Import this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ract.errors import ModelFailure, RactError, error_line  # noqa: E402

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


def record_failure(snakemake, exc: ModelFailure, *, model: str, data_hash: str) -> None:
    """A baseline that cannot be fit does not stop the study: its checkpoint output becomes a
    failure record (evaluation and the comparison then show the model as failed, with this
    reason) and any other output a one-row CSV saying so. Deterministic, so not retried; change
    the model's settings, or force it with `snakemake -R <rule>`, to try again."""
    import pandas as pd

    from ract.checkpoint import save_failure
    from ract.io import write_csv

    log.warning("%s could not be fit, recorded as failed: %s", model, exc)
    print(f"ract: warning: {model} could not be fit, recorded as failed: {exc}", file=sys.stderr)
    for path in snakemake.output:
        if path.endswith(".pt"):
            save_failure(path, model=model, reason=str(exc), data_hash=data_hash)
        else:
            write_csv(path, pd.DataFrame({"failed": [str(exc)]}))

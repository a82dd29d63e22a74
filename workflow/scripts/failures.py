"""Recording a baseline that cannot be fit (Mult-DAE in train_stage, EASE in fit_baseline). Kept
out of the adapter, which every rule imports, so that the checkpoint code it needs counts as
the code of these two rules only (`ract.provenance.code_files`)."""

import logging
import sys

import pandas as pd

from ract.checkpoint import save_failure
from ract.errors import ModelFailure
from ract.io import write_csv

log = logging.getLogger("ract")


def record_failure(snakemake, exc: ModelFailure, *, model: str, data_hash: str) -> None:
    """A baseline that cannot be fit does not stop the study: its checkpoint output becomes a
    failure record (evaluation and the comparison then show the model as failed, with this
    reason) and any other output a one-row CSV saying so. Deterministic, so not retried; change
    the model's settings, or force it with `snakemake -R <rule>`, to try again."""
    log.warning("%s could not be fit, recorded as failed: %s", model, exc)
    print(f"ract: warning: {model} could not be fit, recorded as failed: {exc}", file=sys.stderr)
    for path in snakemake.output:
        if path.endswith(".pt"):
            save_failure(path, model=model, reason=str(exc), data_hash=data_hash)
        else:
            write_csv(path, pd.DataFrame({"failed": [str(exc)]}))

from pathlib import Path

from adapter import log, run  # first: sets the OpenMP wait policy before torch loads

import pandas as pd
import torch

from ract.data.splits import load_split
from ract.errors import ModelFailure
from ract.evaluate import evaluate_to_frames
from ract.io import write_csv, write_json
from ract.load import load_model
from ract.runtime import resolve_device


def main():
    torch.set_num_threads(snakemake.threads)
    data = load_split(Path(snakemake.input.split).parent)
    checkpoint = snakemake.input.checkpoint
    outputs = list(
        zip(snakemake.params.splits, snakemake.output.per_user, snakemake.output.summary)
    )
    # the data hash lets the comparison refuse results from different splits
    record = {"checkpoint": checkpoint, "data_hash": data.content_hash}
    try:
        model, info = load_model(checkpoint, data_hash=data.content_hash, n_items=data.n_items)
    except ModelFailure as exc:  # a baseline recorded as failed: say so, for the comparison
        log.warning("%s", exc)
        for split, per_user, summary in outputs:
            write_csv(per_user, pd.DataFrame(columns=["user", "n_input", "n_holdout"]))
            write_json(summary, {"split": split, "status": "failed", "error": str(exc), **record})
        return
    device = resolve_device(snakemake.params.device)
    model = model.to(device)
    for split, per_user, summary in outputs:
        frame, result = evaluate_to_frames(model, data, split, snakemake.params.ks, device=device)
        result.update(status="ok", **record, **info)
        write_csv(per_user, frame)
        write_json(summary, result)


run(snakemake, main)

from pathlib import Path

import pandas as pd
from adapter import run  # first: sets the OpenMP wait policy before torch loads
from failures import record_failure

import torch

from ract.baselines import Popularity, save_baseline, select_ease_lambda
from ract.data.splits import load_split
from ract.errors import ModelFailure
from ract.io import write_csv
from ract.runtime import memory_budget, resolve_device


def main():
    torch.set_num_threads(snakemake.threads)
    data = load_split(Path(snakemake.input.split).parent)
    try:
        if snakemake.rule == "fit_ease":
            # a fit over the job's memory budget is refused up front, recorded as failed,
            # rather than killed
            model, grid = select_ease_lambda(
                data,
                tuple(snakemake.params.lambdas),
                device=resolve_device(snakemake.params.device),
                max_bytes=memory_budget(snakemake.resources.mem_mb),
            )
            write_csv(snakemake.output.grid, pd.DataFrame(grid))
        else:
            model = Popularity.fit(data.train)
    except ModelFailure as exc:
        record_failure(snakemake, exc, model=snakemake.params.model, data_hash=data.content_hash)
        return
    save_baseline(snakemake.output.checkpoint, model.cpu(), data_hash=data.content_hash)


run(snakemake, main)

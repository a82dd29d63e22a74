from adapter import run  # first: sets the OpenMP wait policy before torch loads

import torch

from ract.checkpoint import load_model
from ract.data.splits import load_split
from ract.evaluate import evaluate_to_frames
from ract.io import write_csv, write_json
from ract.train import resolve_device


def main():
    torch.set_num_threads(snakemake.threads)
    data = load_split(snakemake.input.split.rsplit("/", 1)[0])
    model, info = load_model(snakemake.input.checkpoint, data_hash=data.content_hash,
                             n_items=data.n_items)
    device = resolve_device(snakemake.params.device)
    frame, summary = evaluate_to_frames(model.to(device), data, snakemake.wildcards.split,
                                        snakemake.params.ks, device=device)
    summary.update(checkpoint=snakemake.input.checkpoint, **info)
    write_csv(snakemake.output.per_user, frame)
    write_json(snakemake.output.summary, summary)


run(snakemake, main)

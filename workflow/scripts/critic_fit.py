from pathlib import Path

from adapter import run  # first: sets the OpenMP wait policy before torch loads

import torch

from ract.checkpoint import build_actor, build_critic, load_checkpoint
from ract.data.splits import load_split
from ract.errors import RactError
from ract.evaluate import critic_fit_frame
from ract.io import write_csv
from ract.runtime import resolve_device


def main():
    torch.set_num_threads(snakemake.threads)
    data = load_split(Path(snakemake.input.split).parent)
    state = load_checkpoint(
        snakemake.input.checkpoint, data_hash=data.content_hash, n_items=data.n_items
    )
    critic = build_critic(state)
    if critic is None:
        raise RactError(f"{snakemake.input.checkpoint}: has no critic to measure")
    device = resolve_device(snakemake.params.device)
    frame = critic_fit_frame(
        build_actor(state).to(device),
        critic.to(device),
        data,
        snakemake.wildcards.split,
        device=device,
    )
    write_csv(snakemake.output[0], frame)


run(snakemake, main)

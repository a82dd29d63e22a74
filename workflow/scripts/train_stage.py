from pathlib import Path

from adapter import run  # first: sets the OpenMP wait policy before torch loads
from failures import record_failure

import torch

from ract.data.splits import load_split
from ract.errors import ModelFailure
from ract.model import ActorConfig, CriticConfig
from ract.train import stage_defaults, train_stage


def main():
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    cfg = stage_defaults(p.stage, seed=p.seed, precision=p.precision, **p.settings[p.stage])
    data = load_split(Path(snakemake.input.split).parent)
    actor, critic = p.settings.get("actor"), p.settings.get("critic")
    out = Path(snakemake.output.checkpoint)
    try:
        train_stage(
            data,
            cfg,
            out_checkpoint=snakemake.output.checkpoint,
            history_path=snakemake.output.history,
            actor_cfg=ActorConfig(n_items=data.n_items, **actor) if actor else None,
            critic_cfg=CriticConfig(**critic) if critic else None,
            pre_model_path=snakemake.input.get("start"),
            checkpoint_dir=str(out.parent / "checkpoints"),
            device=p.device,
            # outside the rule's outputs, which Snakemake deletes when a job fails: a job
            # killed mid-way (wall time, pre-emption) continues from here when rerun
            resume_path=str(out.parent / "resume" / out.name),
        )
    except ModelFailure as exc:
        # RaCT's own stages stop the study; a baseline (Mult-DAE) is recorded as failed
        if not p.get("baseline"):
            raise
        record_failure(snakemake, exc, model=p.baseline, data_hash=data.content_hash)


run(snakemake, main)

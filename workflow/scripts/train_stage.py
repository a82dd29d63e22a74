from adapter import run  # first: sets the OpenMP wait policy before torch loads

import torch

from ract.data.splits import load_split
from ract.model import ActorConfig, CriticConfig
from ract.train import stage_defaults, train_stage


def main():
    torch.set_num_threads(snakemake.threads)
    settings = snakemake.params.settings
    stage = dict(settings["stage"])
    if "pretrain_epochs" in stage:  # RecBole's name for the pretraining stages' epochs
        stage["epochs"] = stage.pop("pretrain_epochs")
    cfg = stage_defaults(snakemake.wildcards.stage, seed=snakemake.params.seed, **stage)
    data = load_split(snakemake.input.split.rsplit("/", 1)[0])
    actor = settings.get("actor")
    critic = settings.get("critic")
    train_stage(
        data, cfg,
        out_checkpoint=snakemake.output.checkpoint, history_path=snakemake.output.history,
        actor_cfg=ActorConfig(n_items=data.n_items, **actor) if actor else None,
        critic_cfg=CriticConfig(**critic) if critic else None,
        pre_model_path=snakemake.input.start or None, device="auto")


run(snakemake, main)

DATASETS = list(config["datasets"])
SEEDS = [int(s) for s in config["seeds"]]
STAGES = ["actor_pretrain", "critic_pretrain", "finetune"]
EVALUATED = ["actor_pretrain", "finetune"]  # Mult-VAE and RaCT
SPLITS = ["validation", "test"]

wildcard_constraints:
    dataset="[^/]+",
    seed=r"\d+",
    stage="|".join(STAGES),
    split="|".join(SPLITS),


def previous_checkpoint(wildcards):
    """The checkpoint a stage starts from (none for actor_pretrain)."""
    i = STAGES.index(wildcards.stage)
    if i == 0:
        return []
    return f"results/{wildcards.dataset}/seed{wildcards.seed}/{STAGES[i - 1]}.pt"


def stage_params(wildcards):
    """Exactly the settings one stage uses, so that changing another stage's settings does not
    rerun it."""
    params = {"stage": dict(config["stages"][wildcards.stage])}
    if wildcards.stage == "actor_pretrain":
        params["actor"] = dict(config["actor"])
    if wildcards.stage == "critic_pretrain":
        params["critic"] = dict(config["critic"])
    return params

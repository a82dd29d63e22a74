# RaCT on another actor (paper Table 4): the critic is pretrained on the Mult-DAE baseline's
# NLL and that actor is finetuned against it, with RaCT's critic and finetune settings.
# A Mult-DAE recorded as failed is recorded as failed here too.


use rule critic_pretrain as ract_dae_critic with:
    input:
        split=rules.prepare_data.output.manifest,
        start="results/{dataset}/main/seed{seed}/mult_dae.pt",
    output:
        checkpoint="results/{dataset}/main/seed{seed}/ract_dae_critic.pt",
        history="results/{dataset}/main/seed{seed}/ract_dae_critic_history.csv",
    log:
        "logs/{dataset}/main/seed{seed}/ract_dae_critic.log",
    benchmark:
        "benchmarks/{dataset}/main/seed{seed}/ract_dae_critic.tsv"
    params:
        stage="critic_pretrain",
        baseline=ARMS["ract_dae"],
        settings=stage_settings("critic_pretrain", variant="main"),
        seed=seed_number,
        device=config["device"],
        precision=config["precision"],
        code=code_hash("train_stage"),


use rule finetune as ract_dae with:
    input:
        split=rules.prepare_data.output.manifest,
        start="results/{dataset}/main/seed{seed}/ract_dae_critic.pt",
    output:
        checkpoint="results/{dataset}/main/seed{seed}/ract_dae.pt",
        history="results/{dataset}/main/seed{seed}/ract_dae_history.csv",
    log:
        "logs/{dataset}/main/seed{seed}/ract_dae.log",
    benchmark:
        "benchmarks/{dataset}/main/seed{seed}/ract_dae.tsv"
    params:
        stage="finetune",
        baseline=ARMS["ract_dae"],
        settings=stage_settings("finetune", variant="main"),
        seed=seed_number,
        device=config["device"],
        precision=config["precision"],
        code=code_hash("train_stage"),

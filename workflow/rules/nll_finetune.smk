rule nll_finetune:
    # The control arm: the Mult-VAE checkpoint finetuned on its own likelihood (NLL + beta KL,
    # beta where pretraining left it) with RaCT's finetune schedule, optimizer, batches, masks
    # and noise. RaCT minus this isolates what the critic contributes.
    input:
        split=rules.prepare_data.output.manifest,
        start=stage_checkpoint("actor_pretrain"),
    output:
        checkpoint="results/{dataset}/{variant}/seed{seed}/nll_finetune.pt",
        history="results/{dataset}/{variant}/seed{seed}/nll_finetune_history.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/nll_finetune.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/nll_finetune.tsv"
    params:
        stage="finetune",
        settings=control_settings,
        seed=seed_number,
        device=config["device"],
        precision=config["precision"],
        code=code_hash("train_stage"),
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=uses_gpu(),
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/train_stage.py"

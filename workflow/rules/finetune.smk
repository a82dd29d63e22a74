rule finetune:
    input:
        split=rules.prepare_data.output.manifest,
        start=stage_checkpoint("critic_pretrain"),
    output:
        checkpoint="results/{dataset}/{variant}/seed{seed}/finetune.pt",
        history="results/{dataset}/{variant}/seed{seed}/finetune_history.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/finetune.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/finetune.tsv"
    params:
        stage="finetune",
        settings=stage_settings("finetune"),
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

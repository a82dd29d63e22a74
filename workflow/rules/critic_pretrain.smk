rule critic_pretrain:
    input:
        split=rules.prepare_data.output.manifest,
        start=stage_checkpoint("actor_pretrain"),
    output:
        checkpoint="results/{dataset}/{variant}/seed{seed}/critic_pretrain.pt",
        history="results/{dataset}/{variant}/seed{seed}/critic_pretrain_history.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/critic_pretrain.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/critic_pretrain.tsv"
    params:
        stage="critic_pretrain",
        settings=stage_settings("critic_pretrain"),
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

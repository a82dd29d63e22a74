rule actor_pretrain:
    input:
        split=rules.prepare_data.output.manifest,
    output:
        checkpoint="results/{dataset}/{variant}/seed{seed}/actor_pretrain.pt",
        history="results/{dataset}/{variant}/seed{seed}/actor_pretrain_history.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/actor_pretrain.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/actor_pretrain.tsv"
    params:
        stage="actor_pretrain",
        settings=stage_settings("actor_pretrain"),
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

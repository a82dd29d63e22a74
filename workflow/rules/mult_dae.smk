rule mult_dae:
    input:
        split=rules.prepare_data.output.manifest,
    output:
        checkpoint="results/{dataset}/main/seed{seed}/mult_dae.pt",
        history="results/{dataset}/main/seed{seed}/mult_dae_history.csv",
    log:
        "logs/{dataset}/main/seed{seed}/mult_dae.log",
    benchmark:
        "benchmarks/{dataset}/main/seed{seed}/mult_dae.tsv"
    params:
        stage="actor_pretrain",
        baseline=BASELINES["mult_dae"],  # a ModelFailure is recorded, not fatal
        settings=lambda w: mult_dae_settings(),
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

rule train_stage:
    input:
        split="results/{dataset}/split/manifest.json",
        start=previous_checkpoint,
    output:
        checkpoint="results/{dataset}/seed{seed}/{stage}.pt",
        history="results/{dataset}/seed{seed}/{stage}_history.csv",
    log:
        "logs/{dataset}/seed{seed}/{stage}.log",
    benchmark:
        "benchmarks/{dataset}/seed{seed}/{stage}.tsv"
    params:
        settings=stage_params,
        seed=lambda w: int(w.seed),
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
    script:
        "../scripts/train_stage.py"

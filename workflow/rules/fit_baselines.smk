rule fit_ease:
    input:
        split=rules.prepare_data.output.manifest,
    output:
        checkpoint="results/{dataset}/baselines/ease.pt",
        grid="results/{dataset}/baselines/ease_lambda.csv",
    log:
        "logs/{dataset}/baselines/fit_ease.log",
    benchmark:
        "benchmarks/{dataset}/baselines/fit_ease.tsv"
    params:
        model=BASELINES["ease"],  # a ModelFailure (memory, not positive definite) is recorded
        lambdas=lambda w: config["baselines"]["ease"]["lambdas"],
        device=config["device"],
        code=code_hash("fit_baseline"),
    threads: 2
    resources:
        # follows the data: 8000 MB up to ML-20M's 20,108 items, 16,446 on MSD's 41,140
        mem_mb=ease_mem_mb,
        runtime=60,
        gpu=uses_gpu(),
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/fit_baseline.py"


rule fit_popularity:
    input:
        split=rules.prepare_data.output.manifest,
    output:
        checkpoint="results/{dataset}/baselines/popularity.pt",
    log:
        "logs/{dataset}/baselines/fit_popularity.log",
    params:
        model=BASELINES["popularity"],
        code=code_hash("fit_baseline"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/fit_baseline.py"

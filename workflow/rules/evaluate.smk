rule evaluate_checkpoint:
    input:
        split="results/{dataset}/split/manifest.json",
        checkpoint="results/{dataset}/seed{seed}/{stage}.pt",
    output:
        per_user="results/{dataset}/seed{seed}/eval/{stage}_{split}_per_user.csv",
        summary="results/{dataset}/seed{seed}/eval/{stage}_{split}_summary.json",
    log:
        "logs/{dataset}/seed{seed}/evaluate_{stage}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/seed{seed}/evaluate_{stage}_{split}.tsv"
    params:
        ks=config["evaluate"]["ks"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/evaluate_checkpoint.py"


rule summarise_results:
    input:
        summaries=lambda w: expand(
            "results/{dataset}/seed{seed}/eval/{stage}_{split}_summary.json",
            dataset=w.dataset, seed=SEEDS, stage=EVALUATED, split=SPLITS),
        critic_histories=lambda w: expand(
            "results/{dataset}/seed{seed}/critic_pretrain_history.csv",
            dataset=w.dataset, seed=SEEDS),
    output:
        csv="results/{dataset}/metrics.csv",
        md="results/{dataset}/metrics.md",
    log:
        "logs/{dataset}/summarise_results.log",
    script:
        "../scripts/summarise_results.py"

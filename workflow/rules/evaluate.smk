rule evaluate:
    input:
        split="results/{dataset}/split/manifest.json",
        checkpoint="results/{dataset}/{variant}/seed{seed}/{stage}.pt",
    output:
        per_user="results/{dataset}/{variant}/seed{seed}/eval/{stage}_{split}_per_user.csv",
        summary="results/{dataset}/{variant}/seed{seed}/eval/{stage}_{split}_summary.json",
    log:
        "logs/{dataset}/{variant}/seed{seed}/evaluate_{stage}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/evaluate_{stage}_{split}.tsv"
    params:
        ks=config["evaluate"]["ks"],
        device=config["device"],
        code=code_hash("evaluate"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=uses_gpu(),
    script:
        "../scripts/evaluate.py"

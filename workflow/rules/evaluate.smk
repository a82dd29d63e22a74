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
    wildcard_constraints:
        stage="actor_pretrain|critic_pretrain|finetune|mult_dae",
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


rule evaluate_baseline:
    input:
        split="results/{dataset}/split/manifest.json",
        checkpoint="results/{dataset}/baselines/{kind}.pt",
    output:
        per_user="results/{dataset}/baselines/eval/{kind}_{split}_per_user.csv",
        summary="results/{dataset}/baselines/eval/{kind}_{split}_summary.json",
    log:
        "logs/{dataset}/baselines/evaluate_{kind}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/baselines/evaluate_{kind}_{split}.tsv"
    wildcard_constraints:
        kind="ease|popularity",
    params:
        ks=config["evaluate"]["ks"],
        device=config["device"],
        code=code_hash("evaluate"),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=uses_gpu(),
    script:
        "../scripts/evaluate.py"


rule critic_fit:
    # Per held-out user: the critic's prediction, the true NDCG it predicts and the actor's NLL
    # (the paper's critic-correlation check), from a checkpoint that carries a critic.
    input:
        split="results/{dataset}/split/manifest.json",
        checkpoint="results/{dataset}/{variant}/seed{seed}/{stage}.pt",
    output:
        "results/{dataset}/{variant}/seed{seed}/eval/{stage}_{split}_critic_fit.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/critic_fit_{stage}_{split}.log",
    wildcard_constraints:
        stage="critic_pretrain|finetune",
    params:
        device=config["device"],
        code=code_hash("evaluate"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=uses_gpu(),
    script:
        "../scripts/critic_fit.py"

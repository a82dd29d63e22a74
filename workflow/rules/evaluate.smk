# One job per checkpoint scores both splits: the model and the split files are loaded once, and
# on small data sets a job's start (Python, torch) costs more than its evaluation.
# One thread for a trained model's evaluation and the critic's fit: on ml-100k, 85% of such a
# job is its start, which a second thread does not speed up, and with --cores 2 two of them
# then run side by side (beside nothing else: training takes 2). Their outputs are the same
# bytes with 1 thread as with 2. The baselines' evaluation keeps 2: EASE scores with an
# items x items matrix, heavy on large data sets.


rule evaluate:
    input:
        split=rules.prepare_data.output.manifest,
        checkpoint="results/{dataset}/{variant}/seed{seed}/{stage}.pt",
    output:
        **eval_outputs("results/{dataset}/{variant}/seed{seed}/eval/{stage}"),
    log:
        "logs/{dataset}/{variant}/seed{seed}/evaluate_{stage}.log",
    benchmark:
        "benchmarks/{dataset}/{variant}/seed{seed}/evaluate_{stage}.tsv"
    wildcard_constraints:
        stage="actor_pretrain|critic_pretrain|finetune|nll_finetune|mult_dae|ract_dae",
    params:
        splits=SPLITS,
        ks=config["evaluate"]["ks"],
        device=config["device"],
        code=code_hash("evaluate"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=uses_gpu(),
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/evaluate.py"


use rule evaluate as evaluate_baseline with:
    input:
        split=rules.prepare_data.output.manifest,
        checkpoint="results/{dataset}/baselines/{kind}.pt",
    output:
        **eval_outputs("results/{dataset}/baselines/eval/{kind}"),
    log:
        "logs/{dataset}/baselines/evaluate_{kind}.log",
    benchmark:
        "benchmarks/{dataset}/baselines/evaluate_{kind}.tsv"
    wildcard_constraints:
        kind="ease|popularity",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=uses_gpu(),


rule critic_fit:
    # Per held-out user: the critic's prediction, the true NDCG it predicts and the actor's NLL
    # (the paper's critic-correlation check), from a checkpoint that carries a critic.
    input:
        split=rules.prepare_data.output.manifest,
        checkpoint="results/{dataset}/{variant}/seed{seed}/{stage}.pt",
    output:
        "results/{dataset}/{variant}/seed{seed}/eval/{stage}_{split}_critic_fit.csv",
    log:
        "logs/{dataset}/{variant}/seed{seed}/critic_fit_{stage}_{split}.log",
    wildcard_constraints:
        stage="critic_pretrain|finetune",
    params:
        device=config["device"],
        code=code_hash("critic_fit"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=uses_gpu(),
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/critic_fit.py"

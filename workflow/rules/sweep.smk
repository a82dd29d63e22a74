rule sweep:
    input:
        summaries=lambda w: [s for v in VARIANTS for s in evaluations(w.dataset, v)],
    output:
        csv="results/{dataset}/sweep.csv",
        md="results/{dataset}/sweep.md",
        best="results/{dataset}/sweep_best.json",
    log:
        "logs/{dataset}/sweep.log",
    localrule: True
    params:
        variants=lambda w: {
            v: {"settings": sweep_point(cfg), "summaries": evaluations(w.dataset, v)}
            for v, cfg in VARIANTS.items()
        },
        grid=config["sweep"],
        models=MODELS,
        code=code_hash("sweep"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/sweep.py"

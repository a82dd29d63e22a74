rule prepare_data:
    input:
        raw=raw_input,
    output:
        manifest="results/{dataset}/split/manifest.json",
    log:
        "logs/{dataset}/prepare_data.log",
    benchmark:
        "benchmarks/{dataset}/prepare_data.tsv"
    params:
        reader=lambda w: canonical({k: config["datasets"][w.dataset][k]
                                    for k in ("format", "columns", "sep", "header")}),
        settings=lambda w: canonical(config["datasets"][w.dataset]["prepare"]),
        code=code_hash("data"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/prepare_data.py"

rule obtain_data:
    output:
        pointer="data/raw/{dataset}.json",
    log:
        "logs/{dataset}/obtain_data.log",
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        offline=lambda w: config["datasets"][w.dataset]["offline"],
        cache="data/raw",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/obtain_data.py"

rule prepare_data:
    output:
        manifest="results/{dataset}/split/manifest.json",
    log:
        "logs/{dataset}/prepare_data.log",
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        offline=lambda w: config["datasets"][w.dataset].get("offline", False),
        settings=lambda w: config["datasets"][w.dataset]["prepare"],
        cache="data/raw",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare_data.py"

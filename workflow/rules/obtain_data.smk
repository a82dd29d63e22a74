for _name, _ds in config["datasets"].items():
    if (_ds["source"] == "synthetic") != (_ds["synthetic"] is not None):
        config_error(
            ["datasets", _name, "synthetic"],
            "give a `synthetic:` block exactly when `source: synthetic`",
        )


rule obtain_data:
    output:
        pointer="data/raw/{dataset}.json",
    log:
        "logs/{dataset}/obtain_data.log",
    localrule: True
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        offline=lambda w: config["datasets"][w.dataset]["offline"],
        synthetic=lambda w: canonical(config["datasets"][w.dataset]["synthetic"]),
        # generated data changes with the generator's code; a download does not
        code=lambda w: (
            code_hash("obtain_data") if config["datasets"][w.dataset]["synthetic"] else ""
        ),
        cache=lambda w, output: str(Path(output.pointer).parent),  # the download cache
    threads: 1
    resources:
        # generating ML-20M-shaped data peaks at ~1.2 GB, Netflix-shaped at ~7 GB
        mem_mb=lambda w: 16000 if config["datasets"][w.dataset]["synthetic"] else 1000,
        runtime=30,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/obtain_data.py"

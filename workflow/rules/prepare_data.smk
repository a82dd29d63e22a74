rule prepare_data:
    input:
        raw=raw_input,
    output:
        manifest="results/{dataset}/split/manifest.json",
        # the rest of the split (test_exclude.npz, of the weak protocol only, is listed in the
        # manifest and checked when loaded): declared, so that a file deleted by hand is remade
        files=multiext(
            "results/{dataset}/split/",
            "train.npz",
            "validation_input.npz",
            "validation_holdout.npz",
            "test_input.npz",
            "test_holdout.npz",
            "users.csv",
            "items.csv",
        ),
    log:
        "logs/{dataset}/prepare_data.log",
    benchmark:
        "benchmarks/{dataset}/prepare_data.tsv"
    params:
        reader=lambda w: canonical(
            {k: config["datasets"][w.dataset][k] for k in ("format", "columns", "sep", "header")}
        ),
        settings=lambda w: canonical(config["datasets"][w.dataset]["prepare"]),
        code=code_hash("prepare_data"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/prepare_data.py"

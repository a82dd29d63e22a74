rule compare:
    input:
        # every file compared, by a name that says what it is, e.g. summary_finetune_seed1_test
        # (`comparison_files` in common.smk)
        unpack(comparison_inputs),
    output:
        # in `snakemake --report`: the page inline, the rest as downloads, each under a label
        html=report(
            "results/{dataset}/comparison.html",
            caption="../report/comparison.rst",
            category="{dataset}",
            labels={"result": "models compared, paired tests"},
        ),
        csv=report(
            "results/{dataset}/comparison.csv",
            caption="../report/comparison_csv.rst",
            category="{dataset}",
            labels={"result": "metrics per seed (CSV)"},
        ),
        md="results/{dataset}/comparison.md",
        significance=report(
            "results/{dataset}/significance.json",
            caption="../report/significance.rst",
            category="{dataset}",
            labels={"result": "paired tests (JSON)"},
        ),
        curves=report(
            "results/{dataset}/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="{dataset}",
            labels={"result": "training curves"},
        ),
        curves_pdf="results/{dataset}/figures/training_curves.pdf",
        bars=report(
            "results/{dataset}/figures/metrics.png",
            caption="../report/metrics.rst",
            category="{dataset}",
            labels={"result": "test metrics per model"},
        ),
        bars_pdf="results/{dataset}/figures/metrics.pdf",
        gain=report(
            "results/{dataset}/figures/gain_by_activity.png",
            caption="../report/gain_by_activity.rst",
            category="{dataset}",
            labels={"result": "RaCT gain by user activity"},
        ),
        gain_pdf="results/{dataset}/figures/gain_by_activity.pdf",
        critic=report(
            "results/{dataset}/figures/critic_fit.png",
            caption="../report/critic_fit.rst",
            category="{dataset}",
            labels={"result": "critic fit"},
        ),
        critic_pdf="results/{dataset}/figures/critic_fit.pdf",
    log:
        "logs/{dataset}/compare.log",
    localrule: True
    params:
        # what each input is, by its input name: {"kind": "summary", "model": "RaCT", "seed": 1,
        # "split": "test"}, {"kind": "history", "seed": 1, "stage": "finetune"}, ...
        files=comparison_descriptions,
        pairs=lambda w: [(NAMES[a], NAMES[b]) for a, b in pairs()],
        starts={NAMES[model]: NAMES[start] for model, start in STARTS.items()},
        paper=lambda w: config["datasets"][w.dataset]["paper"],  # the paper's numbers beside ours
        code=code_hash("compare"),
    threads: 2  # two processes (workflow/scripts/compare.py)
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/compare.py"

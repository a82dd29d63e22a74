rule compare:
    input:
        summaries=lambda w: [path for path, _, _ in compared(w.dataset)],
        # per-user test metrics of every model in a paired test, seed by seed
        paired=lambda w: [
            per_seed_eval(w.dataset, seed, model, "test", "per_user.csv")
            for model, seed in paired_runs()
        ],
        histories=lambda w: [
            history(w.dataset, "main", seed, stage) for seed in SEEDS for stage in STAGES
        ],
        controls=lambda w: (
            [f"{run_dir(w.dataset, 'main', seed)}/nll_finetune_history.csv" for seed in SEEDS]
            if "nll_finetune" in config["models"]
            else []
        ),
        critic_fits=lambda w: [
            f"{run_dir(w.dataset, 'main', seed)}/eval/"
            "critic_pretrain_validation_critic_fit.csv"
            for seed in SEEDS
        ],
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
        # what each input file is, in input order: (seed, model) of each summary, (model name,
        # seed) of each per-user table, the seed of each history and control history
        summaries=lambda w: [(seed, model) for _, model, seed in compared(w.dataset)],
        paired=lambda w: [(NAMES[model], seed) for model, seed in paired_runs()],
        pairs=lambda w: [(NAMES[a], NAMES[b]) for a, b in pairs()],
        starts={NAMES[model]: NAMES[start] for model, start in STARTS.items()},
        histories=[seed for seed in SEEDS for _ in STAGES],
        controls=lambda w: SEEDS if "nll_finetune" in config["models"] else [],
        critic_seeds=SEEDS,
        paper=lambda w: config["datasets"][w.dataset]["paper"],  # the paper's numbers beside ours
        code=code_hash("compare"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ract.yaml"
    script:
        "../scripts/compare.py"

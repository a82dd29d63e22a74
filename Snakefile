# The RaCT study as a DAG: prepare -> pretrain_actor -> pretrain_critic -> finetune ->
# evaluate -> summarise. Output paths:
#   data/raw/                                       downloads and extracted raw files (cache)
#   results/{dataset}/split/                        split matrices, id maps, manifest.json
#   results/{dataset}/seed{seed}/{stage}.pt         best checkpoint of each train_stage
#   results/{dataset}/seed{seed}/{stage}_history.csv   per-epoch history
#   results/{dataset}/seed{seed}/eval/{stage}_{split}_per_user.csv / _summary.json
#   results/{dataset}/metrics.csv, metrics.md       every stage and seed side by side
# Every job writes logs/... and training and evaluation jobs benchmarks/...

configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        expand("results/{dataset}/metrics.csv", dataset=DATASETS),

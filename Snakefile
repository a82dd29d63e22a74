# The RaCT study as a DAG:
#   obtain_data -> prepare_data -> actor_pretrain -> critic_pretrain -> finetune
#   -> evaluate (each Mult-VAE and RaCT checkpoint, validation and test) -> compare [-> sweep]
#   the control arm: actor_pretrain -> nll_finetune (RaCT's finetune on the likelihood) -> evaluate
#   baselines beside them: mult_dae, fit_ease, fit_popularity -> evaluate(_baseline)
#   RaCT on the Mult-DAE actor: mult_dae -> ract_dae_critic -> ract_dae -> evaluate
#
# Output paths ({variant} is `main`, or `sweep-<hash>` for a sweep combination):
#   data/raw/                                        download cache; {dataset}.json points at
#                                                    the raw file of a known data set
#   results/{dataset}/split/                         split matrices, id maps, manifest.json
#   results/{dataset}/{variant}/seed{seed}/{stage}.pt           best checkpoint of a stage
#   results/{dataset}/{variant}/seed{seed}/{stage}_history.csv  one row per epoch
#   results/{dataset}/{variant}/seed{seed}/eval/{stage}_{split}_per_user.csv, _summary.json
#   results/{dataset}/{variant}/seed{seed}/nll_finetune.pt      the control arm
#   results/{dataset}/main/seed{seed}/mult_dae.pt   Mult-DAE baseline (trained per seed)
#   results/{dataset}/main/seed{seed}/ract_dae_critic.pt, ract_dae.pt   RaCT on Mult-DAE
#   results/{dataset}/baselines/{ease,popularity}.pt, eval/   deterministic baselines
#   results/{dataset}/comparison.csv, .md, figures/  models side by side, training curves
#   results/{dataset}/sweep.csv, .md, sweep_best.json   every sweep combination, the best one
#   logs/... for every job, benchmarks/... for preparation, training and evaluation jobs.
#
# Software: workflow/envs/ract.yaml on every rule that runs Python (--sdm conda), or the image
# built from workflow/envs/Dockerfile as ract.sif in the working folder (--sdm apptainer).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


container: "ract.sif"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/obtain_data.smk"
include: "workflow/rules/prepare_data.smk"
include: "workflow/rules/actor_pretrain.smk"
include: "workflow/rules/critic_pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/nll_finetune.smk"
include: "workflow/rules/mult_dae.smk"
include: "workflow/rules/ract_dae.smk"
include: "workflow/rules/fit_baselines.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/sweep.smk"


TARGETS = expand("results/{dataset}/comparison.csv", dataset=DATASETS) + (
    expand("results/{dataset}/sweep.csv", dataset=DATASETS) if len(VARIANTS) > 1 else []
)


# Rules marked `localrule: True` (this one, obtain_data, compare, sweep) run in Snakemake's own
# process, never on a cluster node: the download needs the network, which compute nodes often
# lack, and the rest are light. Marked per rule, not in a `localrules:` list, which would miss
# the renamed rules of a module (`use rule * from ract as ract_*`).
onsuccess:
    stop_rescheduling()


onerror:
    stop_rescheduling()


rule all:
    input:
        TARGETS,
        # files a finished result was made from that are gone (a failed or killed job after a
        # settings change, a file deleted by hand): remade, and with them what depends on them
        lost_files(TARGETS),
    localrule: True

"""The names and layout versions of what ract writes, shared by the library, the command line,
the workflow and the report.

Standard library only, and nothing but constants: `workflow/rules/common.smk` imports this
module when Snakemake parses the workflow, where torch need not be installed.
"""

# The training stages, in order. Each names its checkpoint (`actor_pretrain.pt`), the `stage`
# column of its history and the workflow's wildcard `{stage}`.
STAGES = ("actor_pretrain", "critic_pretrain", "finetune")

# The metrics of the paper's main results table (Lobel et al., ICLR 2020), in its order: those
# the comparison, the sweep and `ract evaluate`'s log line show.
PAPER_METRICS = ("recall@20", "recall@50", "ndcg@100")

# Layout version of each kind of file, written as `format_version` and checked on reading;
# raised when a file of the old layout can no longer be read.
# A prepared split's manifest.json (`ract.data.prepare`, read by `ract.data.splits`).
SPLIT_FORMAT_VERSION = 1
# Files read by `ract.checkpoint.read_state`: training checkpoints, the record of a model that
# could not be fit, resume points (`ract.resume`) and baseline checkpoints (`ract.baselines`).
CHECKPOINT_FORMAT_VERSION = 1

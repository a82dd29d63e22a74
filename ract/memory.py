"""Sizes that bound a job's memory, and EASE's estimate from them. Standard library only:
Snakemake reads it while it plans jobs (`fit_ease`'s memory request), where torch need not be
installed."""

from __future__ import annotations

import math

# Users scored at once in evaluation and validation (`ract.evaluate`).
EVAL_BATCH_SIZE = 1000
# Up to this many items the Gram matrix is inverted in float64 (5000^2 doubles = 200 MB); above
# it in float32, which halves memory (20k items: 1.6 GB per matrix) and is accurate enough
# because lambda * I keeps the matrix well conditioned.
FLOAT64_MAX_ITEMS = 5000
# Bytes per (user, item) cell of a batch of validation users while it is scored
# (`ract.evaluate.evaluate_model`), at most: while a batch is built, the previous batch's
# fold-in, held-out and excluded rows as dense float32 and its scores (16) and the new rows
# (12); while it is scored, its rows (12), the previous scores, the new scores and the masked
# scores (12) and two boolean masks (2).
EVAL_CELL_BYTES = 28
# What a fit's process takes on the first use of LAPACK, OpenMP threads and the evaluation's
# code, whatever the size: measured 6-10 MiB for MKL's potrf and potri, 2-3 MiB for the first
# Gram matrix (benchmarks/ease_memory.py).
EASE_FIXED_BYTES = 16 * 2**20
# fit_ease's job beside the fit: Python with torch, pandas and the job's code (a training
# process starts at 263-312 MiB), and the split as loaded, per interaction (float32 value and
# int32 index, twice over while a matrix file is read).
JOB_START_BYTES = 512 * 2**20
SPLIT_BYTES_PER_INTERACTION = 16
# fit_ease's memory request never goes below what it was before it followed the data.
EASE_JOB_MIN_MB = 8000


def ease_fit_bytes(
    n_items: int, eval_rows: int = EVAL_BATCH_SIZE, float64_max_items: int = FLOAT64_MAX_ITEMS
) -> int:
    """Peak memory of `ract.baselines.select_ease_lambda` on `n_items` items, over the data
    already loaded.

    With s = 8 bytes up to `float64_max_items` items (float64), else 4 (float32), the sum of:

    - s n_items^2: X^T X, kept for the whole grid;
    - s n_items^2: the one work matrix that every lambda's fit overwrites: X^T X + lam I, its
      Cholesky factor, the inverse and B, each in place (`ease_weights_`). The lambda chosen
      is fitted into it again at the end rather than kept in a matrix of its own;
    - 4 n_items^2, in float64 only: B as float32, the model scored on the validation users and
      the one returned (in float32 the model is the work matrix itself);
    - EVAL_CELL_BYTES (28) x `eval_rows` x n_items: scoring a batch of validation users
      (`eval_rows`: the batch size, or the number of validation users if fewer);
    - EASE_FIXED_BYTES (16 MiB): libraries' first use, whatever the size.

    Building X^T X needs less (X^T X and under 3 n_items^2 bytes of block product), and so
    does the end (the work matrix, and in float64 the float32 model). Measured against this
    in benchmarks/results/ease_memory.md.
    """
    itemsize = 8 if n_items <= float64_max_items else 4
    cells = n_items * n_items
    matrices = 2 * itemsize * cells + (4 * cells if itemsize == 8 else 0)
    return matrices + EVAL_CELL_BYTES * eval_rows * n_items + EASE_FIXED_BYTES


def ease_job_mb(n_items: int, n_interactions: int) -> int:
    """fit_ease's memory request in MB (as Snakemake's mem_mb, MiB): the fit's estimate with
    10% to spare, the process's start and the loaded split; at least EASE_JOB_MIN_MB. On
    ML-20M (20,108 items) that is the minimum; on the Million Song Dataset's 41,140 items
    the fit alone needs 13.7 GiB."""
    need = 1.1 * ease_fit_bytes(n_items) + JOB_START_BYTES
    need += SPLIT_BYTES_PER_INTERACTION * n_interactions
    return max(EASE_JOB_MIN_MB, math.ceil(need / 2**20))

"""Non-neural baselines: item popularity and EASE (Steck, "Embarrassingly Shallow Autoencoders
for Sparse Data", WWW 2019).

Both are `torch.nn.Module` scorers: `forward(x)` takes users' interaction rows (B, n_items)
float32 and returns scores (B, n_items), higher = better; the evaluator masks excluded items.
Their checkpoints (`save_baseline` / `load_baseline`) hold tensors and plain values only and
load with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from . import __version__, memory
from .checkpoint import check_data, read_state, write_state
from .data.splits import EvalSplit, SplitData
from .errors import ModelFailure, RactError
from .evaluate import evaluate_model
from .formats import CHECKPOINT_FORMAT_VERSION
from .memory import EVAL_BATCH_SIZE
from .runtime import return_freed_memory

log = logging.getLogger("ract.baselines")

KINDS = ("ease", "popularity")

# Steck reports the best lambda near 500 on ML-20M (and 200-1000 on Netflix / MSD); small data
# such as ml-100k peaks in the low hundreds. The grid spans both with roughly 2x steps.
DEFAULT_LAMBDAS = (50, 100, 200, 500, 1000, 2000, 5000)
# Up to this many items the Gram matrix is inverted in float64, above in float32
# (`ract.memory`); a module global here so that tests and benchmarks can move it.
FLOAT64_MAX_ITEMS = memory.FLOAT64_MAX_ITEMS
# X^T X is built this many item columns at a time, and at most a quarter of the items, so
# that the sparse block product (12 bytes per cell) stays below one float32 matrix.
GRAM_BLOCK = 2048


class Popularity(nn.Module):
    """Scores every item by its number of training users, the same for every user."""

    def __init__(self, counts: torch.Tensor):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32).flatten())

    @property
    def n_items(self) -> int:
        return self.counts.numel()

    @classmethod
    def fit(cls, train: sp.spmatrix) -> Popularity:
        counts = np.asarray((sp.csr_matrix(train) != 0).sum(axis=0)).ravel()
        return cls(torch.from_numpy(counts.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clone: callers may mask the scores in place, which an expanded view does not allow
        return self.counts.expand(x.shape[0], -1).clone()


class EASE(nn.Module):
    """Linear item-item model `scores = x @ B` with a zero diagonal (no item recommends itself).

    B minimises ||X - X B||^2 + lam ||B||^2 subject to diag(B) = 0, whose closed form is
    P = (X^T X + lam I)^-1, B_ij = -P_ij / P_jj (i != j), B_jj = 0.
    """

    def __init__(self, B: torch.Tensor, lam: float):
        super().__init__()
        B = torch.as_tensor(B, dtype=torch.float32)
        if B.dim() != 2 or B.shape[0] != B.shape[1]:
            raise ValueError(f"B must be a square matrix, got shape {tuple(B.shape)}")
        self.register_buffer("B", B)
        self.lam = float(lam)

    @property
    def n_items(self) -> int:
        return self.B.shape[0]

    @classmethod
    def fit(cls, train: sp.spmatrix, lam: float, *, device="cpu") -> EASE:
        return cls.from_gram(gram_matrix(train, device=device), lam)

    @classmethod
    def from_gram(cls, gram: torch.Tensor, lam: float) -> EASE:
        """Fit from a precomputed X^T X (left unchanged), so a lambda grid builds it once.

        Needs one more matrix like `gram` (see `ease_weights_`), and in float64 the float32
        copy that becomes the model."""
        lam = _check_lambda(lam)
        B = ease_weights_(torch.empty_like(gram, memory_format=torch.contiguous_format), gram, lam)
        return cls(B.to(device="cpu", dtype=torch.float32), lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.B.dtype) @ self.B


def gram_matrix(train: sp.spmatrix, *, device="cpu") -> torch.Tensor:
    """Dense X^T X (n_items, n_items), float64 up to FLOAT64_MAX_ITEMS items, else float32.

    Built from the sparse matrix in blocks of item columns (GRAM_BLOCK, at most a quarter of
    the items), so the sparse intermediate never holds more than a block of the (possibly
    nearly dense) product: its data, indices and dense copy take 12 bytes per cell, under
    3 n_items^2 bytes in all.
    """
    X = sp.csr_matrix(train, dtype=np.float32)
    n = X.shape[1]
    dtype = torch.float64 if n <= FLOAT64_MAX_ITEMS else torch.float32
    block_items = max(1, min(GRAM_BLOCK, -(-n // 4)))
    Xt = X.T.tocsr()
    Xc = X.tocsc()
    G = torch.empty((n, n), dtype=dtype, device=device)
    for start in range(0, n, block_items):
        stop = min(start + block_items, n)
        block = (Xt @ Xc[:, start:stop]).toarray()  # integer counts, exact in float32
        # copy_ converts to G's dtype as it copies: no converted copy of the block
        G[:, start:stop].copy_(torch.from_numpy(block).to(device))
        del block
    return G


def ease_weights_(out: torch.Tensor, gram: torch.Tensor, lam: float) -> torch.Tensor:
    """Write EASE's B for `lam` into `out` and return it, using no other (n, n) memory.

    `out` is a contiguous matrix of `gram`'s shape, dtype and device, not `gram` itself, which is
    left unchanged.
    out = gram + lam I; then, in place on its column-major view (`out.mT`, the same matrix as
    it is symmetric), the Cholesky factor (LAPACK potrf) and from it P = (gram + lam I)^-1
    (potri, whose triangle torch mirrors into the other); then B = -P / diag(P) column by
    column, with a zero diagonal. On CPU this is about twice as fast as solving G P = I with
    `cholesky_solve`, which also copies the factor and the identity (benchmarks/ease_memory.py,
    `--kernels`). Raises ModelFailure when gram + lam I is not positive definite.

    MKL's multithreaded potri is several times slower while other processes load the cores
    and OpenMP threads spin: the workflow's jobs and the ract command set
    OMP_WAIT_POLICY=PASSIVE before torch loads, as should other callers on a shared machine.
    """
    out.copy_(gram)
    out.diagonal().add_(lam)
    F = out.mT  # Fortran order: LAPACK works on it in place
    info = torch.empty((), dtype=torch.int32, device=out.device)
    torch.linalg.cholesky_ex(F, out=(F, info))
    if info.item() != 0:
        raise ModelFailure(
            f"EASE: X^T X + {lam:g} I is not positive definite in "
            f"{gram.dtype}; use a larger lambda"
        )
    torch.cholesky_inverse(F, out=F)
    out.div_(out.diagonal().clone().neg_())  # column j divided by -P_jj
    out.diagonal().zero_()
    return out


def _check_lambda(lam) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise RactError(f"setting lambda: expected a positive number, got {lam!r}") from None
    if not math.isfinite(lam) or lam <= 0:
        raise RactError(f"setting lambda: expected a positive number, got {lam!r}")
    return lam


@torch.inference_mode()
def mean_ndcg(
    model: nn.Module,
    split: EvalSplit,
    k: int = 100,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
) -> float:
    """Mean NDCG@k over the split's users that have held-out items (exclude masked to -inf)."""
    ndcg = evaluate_model(model, split, (k,), ("ndcg",), batch_size=batch_size, device=device)[
        f"ndcg@{k}"
    ]
    ok = ~torch.isnan(ndcg)
    if not ok.any():
        raise RactError(
            "validation split has no users with held-out items; cannot compare models on it"
        )
    return ndcg[ok].mean().item()


def ease_fit_bytes(n_items: int, eval_rows: int = EVAL_BATCH_SIZE) -> int:
    """Peak memory of `select_ease_lambda` on `n_items` items, over the data already loaded:
    `ract.memory.ease_fit_bytes` at this module's FLOAT64_MAX_ITEMS."""
    return memory.ease_fit_bytes(n_items, eval_rows, FLOAT64_MAX_ITEMS)


def select_ease_lambda(
    data: SplitData,
    lambdas=DEFAULT_LAMBDAS,
    k: int = 100,
    *,
    device="cpu",
    max_bytes: int | None = None,
) -> tuple[EASE, list[dict]]:
    """Fit EASE on `data.train` for each lambda and keep the best by validation NDCG@k.

    Returns (best model, [{"lam": ..., f"val_ndcg@{k}": ...} per lambda, in grid order]); ties
    go to the earlier lambda in the grid. With `max_bytes`, a fit that would need more memory
    (`ease_fit_bytes`) is refused before anything is allocated.
    """
    lambdas = [_check_lambda(lam) for lam in lambdas]
    if not lambdas:
        raise RactError("setting lambdas: expected at least one value")
    _check_ease_memory(data, len(lambdas), max_bytes)
    return_freed_memory()  # so that the resident peak is the estimate's
    start = time.perf_counter()
    gram = gram_matrix(data.train, device=device)
    log.info("EASE: X^T X of %d items in %.1fs", data.n_items, time.perf_counter() - start)
    work = torch.empty_like(gram)  # every lambda's B in turn, and in the end the model's
    best, best_score, rows = _score_lambdas(work, gram, lambdas, data, k, device)
    lam = lambdas[best]
    if best != len(lambdas) - 1:  # refit rather than keep a third matrix through the grid
        start = time.perf_counter()
        ease_weights_(work, gram, lam)
        log.info("EASE: fitted lambda %g again (%.1fs)", lam, time.perf_counter() - start)
    del gram
    log.info("EASE: chose lambda %g (validation NDCG@%d %.4f)", lam, k, best_score)
    return EASE(work.to(device="cpu", dtype=torch.float32), lam), rows


def _check_ease_memory(data: SplitData, n_lambdas: int, max_bytes: int | None) -> None:
    """Log the estimated peak memory of the EASE grid; a ModelFailure if it is over
    `max_bytes`."""
    n = data.n_items
    need = ease_fit_bytes(n, min(EVAL_BATCH_SIZE, data.validation.input.shape[0]))
    log.info(
        "EASE: %d items, %d lambdas; estimated peak memory %.2f GiB (ease_fit_bytes)",
        n,
        n_lambdas,
        need / 2**30,
    )
    if max_bytes is not None and need > max_bytes:
        raise ModelFailure(
            f"EASE on {n} items needs about {need / 2**30:.1f} GiB, "
            f"more than its budget of {max_bytes / 2**30:.1f} GiB (the fit_ease job's mem_mb, "
            "or the memory free when it started where that is less); raise mem_mb or free "
            "memory, or leave ease out of `models`"
        )


def _score_lambdas(work, gram, lambdas: list, data: SplitData, k: int, device):
    """Fit each lambda into `work` in turn and score it on the validation users: (index of
    the best, its score, one row per lambda); ties go to the earlier lambda."""
    best, best_score, rows = 0, -math.inf, []
    for i, lam in enumerate(lambdas):
        start = time.perf_counter()
        model = EASE(ease_weights_(work, gram, lam), lam)  # in float32, B is `work` itself
        score = mean_ndcg(model, data.validation, k, device=device)
        del model
        rows.append({"lam": lam, f"val_ndcg@{k}": score})
        log.info(
            "EASE %d/%d: lambda %g: validation NDCG@%d %.4f (%.1fs)",
            i + 1,
            len(lambdas),
            lam,
            k,
            score,
            time.perf_counter() - start,
        )
        if score > best_score:
            best, best_score = i, score
    return best, best_score, rows


def save_baseline(path, model: nn.Module, *, data_hash: str, extra: dict | None = None) -> None:
    """Write a Popularity or EASE model with the hash of its training data, atomically."""
    if isinstance(model, EASE):
        kind, lam = "ease", model.lam
    elif isinstance(model, Popularity):
        kind, lam = "popularity", None
    else:
        raise TypeError(f"save_baseline: expected EASE or Popularity, got {type(model).__name__}")
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "ract_version": __version__,
        "kind": kind,
        "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "lam": lam,
        "data": {"content_hash": data_hash, "n_items": model.n_items},
    }
    clash = set(state) & set(extra or {})
    if clash:
        raise ValueError(f"save_baseline: extra may not replace {', '.join(sorted(clash))}")
    state.update(extra or {})
    write_state(path, state)


def load_baseline(path, *, data_hash: str | None = None, n_items: int | None = None) -> nn.Module:
    """Read a baseline checkpoint; with `data_hash`/`n_items`, refuse one from other data."""
    return baseline_from_state(
        path, read_state(path, "baseline checkpoint"), data_hash=data_hash, n_items=n_items
    )


def baseline_from_state(
    path, state: dict, *, data_hash: str | None = None, n_items: int | None = None
) -> nn.Module:
    """Rebuild a baseline from a checkpoint already read (`ract.checkpoint.read_state`)."""
    bad = RactError(
        f"{path}: not a ract baseline checkpoint of format "
        f"{CHECKPOINT_FORMAT_VERSION} (expected kind {' or '.join(KINDS)})"
    )
    if (
        state.get("kind") not in KINDS
        or not isinstance(state.get("state"), dict)
        or not isinstance(state.get("data"), dict)
    ):
        raise bad
    check_data(path, state["data"], data_hash=data_hash, n_items=n_items)
    ckpt_items = state["data"].get("n_items")
    weights = state["state"]
    try:
        if state["kind"] == "ease":
            model = EASE(weights["B"], _check_lambda(state["lam"]))
        else:
            model = Popularity(weights["counts"])
        model.load_state_dict(weights)  # strict: refuses missing or unexpected entries
    except (KeyError, ValueError, TypeError, RuntimeError, RactError):
        raise bad from None
    if ckpt_items != model.n_items:
        raise RactError(
            f"{path}: baseline checkpoint is inconsistent: its weights cover "
            f"{model.n_items} items, its data record says {ckpt_items}"
        )
    return model

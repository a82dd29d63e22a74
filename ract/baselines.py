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

from . import __version__
from .checkpoint import check_data, read_state
from .data.splits import EvalSplit, SplitData
from .errors import ModelFailure, RactError
from .evaluate import EVAL_BATCH_SIZE, evaluate_model
from .formats import CHECKPOINT_FORMAT_VERSION
from .io import atomic_path

log = logging.getLogger("ract.baselines")

KINDS = ("ease", "popularity")

# Steck reports the best lambda near 500 on ML-20M (and 200-1000 on Netflix / MSD); small data
# such as ml-100k peaks in the low hundreds. The grid spans both with roughly 2x steps.
DEFAULT_LAMBDAS = (50, 100, 200, 500, 1000, 2000, 5000)
# Up to this many items the Gram matrix is inverted in float64 (5000^2 doubles = 200 MB); above
# it in float32, which halves memory (20k items: 1.6 GB per matrix) and is accurate enough
# because lambda * I keeps the matrix well conditioned.
FLOAT64_MAX_ITEMS = 5000
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
        """Fit from a precomputed X^T X (left unchanged), so a lambda grid builds it once."""
        lam = _check_lambda(lam)
        G = gram.clone()
        G.diagonal().add_(lam)
        try:
            L = torch.linalg.cholesky(G)
        except torch.linalg.LinAlgError:
            raise ModelFailure(
                f"EASE: X^T X + {lam:g} I is not positive definite in "
                f"{gram.dtype}; use a larger lambda"
            ) from None
        # P = G^-1 by solving G P = I: on CPU this is several times faster than
        # torch.cholesky_inverse (LAPACK potri) and as accurate. G's storage becomes I.
        G.zero_().diagonal().fill_(1.0)
        P = torch.cholesky_solve(G, L)
        del G, L
        B = P.div_(-P.diagonal().clone())  # column j divided by -P_jj, in place to save memory
        B.diagonal().zero_()
        return cls(B.to(device="cpu", dtype=torch.float32), lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.B.dtype) @ self.B


def gram_matrix(train: sp.spmatrix, *, device="cpu") -> torch.Tensor:
    """Dense X^T X (n_items, n_items), float64 up to FLOAT64_MAX_ITEMS items, else float32.

    Built from the sparse matrix in blocks of item columns, so the sparse intermediate never
    holds more than a block of the (possibly nearly dense) product.
    """
    X = sp.csr_matrix(train, dtype=np.float32)
    n = X.shape[1]
    dtype = torch.float64 if n <= FLOAT64_MAX_ITEMS else torch.float32
    Xt = X.T.tocsr()
    Xc = X.tocsc()
    G = torch.empty((n, n), dtype=dtype, device=device)
    for start in range(0, n, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, n)
        block = (Xt @ Xc[:, start:stop]).toarray()  # integer counts, exact in float32
        G[:, start:stop] = torch.from_numpy(block).to(device=device, dtype=dtype)
    return G


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


def ease_fit_bytes(n_items: int) -> int:
    """Peak memory of an EASE fit: the Gram matrix, its regularised copy, the Cholesky factor
    and the solution, each (n_items, n_items)."""
    itemsize = 8 if n_items <= FLOAT64_MAX_ITEMS else 4
    return 4 * n_items * n_items * itemsize


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
    need = ease_fit_bytes(data.n_items)
    if max_bytes is not None and need > max_bytes:
        raise ModelFailure(
            f"EASE on {data.n_items} items needs about {need / 2**30:.1f} GiB, "
            f"more than its budget of {max_bytes / 2**30:.1f} GiB; raise the "
            "fit_ease job's mem_mb or leave ease out of `models`"
        )
    start = time.perf_counter()
    gram = gram_matrix(data.train, device=device)
    log.info(
        "EASE: X^T X of %d items in %.1fs; %d lambdas to fit",
        data.n_items,
        time.perf_counter() - start,
        len(lambdas),
    )
    best, best_score, rows = None, -math.inf, []
    for i, lam in enumerate(lambdas, 1):
        start = time.perf_counter()
        model = EASE.from_gram(gram, lam).to(device)
        score = mean_ndcg(model, data.validation, k, device=device)
        rows.append({"lam": lam, f"val_ndcg@{k}": score})
        log.info(
            "EASE %d/%d: lambda %g: validation NDCG@%d %.4f (%.1fs)",
            i,
            len(lambdas),
            lam,
            k,
            score,
            time.perf_counter() - start,
        )
        if score > best_score:
            best, best_score = model, score
    log.info("EASE: chose lambda %g (validation NDCG@%d %.4f)", best.lam, k, best_score)
    return best.cpu(), rows


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
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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

"""Reading a prepared split folder (written by `ract.data.prepare.prepare_split`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..errors import RactError
from ..formats import SPLIT_FORMAT_VERSION
from ..sparse import SparseRows
from .prepare import EVAL_SPLITS, n_evaluable


# Entries (fold-in and held-out) up to which a held-out split keeps its batches for the next
# validation (`EvalSplit.sparse_batches`): about 40 MB of kept tensors.
KEEP_MAX_ENTRIES = 2_000_000


@dataclass(frozen=True)
class EvalSplit:
    """Rows are this split's users: `input` is fed to the model, `exclude` is masked from the
    ranking (the input itself, or train + valid under the weak protocol), `holdout` is ranked."""

    input: sp.csr_matrix
    holdout: sp.csr_matrix
    exclude: sp.csr_matrix
    # (batch size, device) -> `sparse_batches`' list, made at its first use
    _batches: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def sparse_batches(self, batch_size: int, device) -> Iterable[tuple]:
        """(rows, input, holdout, exclude) per batch of `batch_size` users, each matrix's rows
        as `SparseRows` on `device` (exclude is input where they are one matrix).

        Kept, where the split holds at most KEEP_MAX_ENTRIES entries: a training stage
        validates the same users every few updates, and slicing the matrices again each time
        cost 7 of a validation's 57 ms on ml-100k. A larger split's batches are made as they
        are read: kept, the 136,677 validation users of ML-20M's shape under the weak protocol
        (9.1M entries) raised the critic stage's peak from 1,258 to 1,480 MiB."""
        n = self.input.shape[0]
        batches = (
            self._sparse_batch(np.arange(start, min(start + batch_size, n)), device)
            for start in range(0, n, batch_size)
        )
        if self.input.nnz + self.holdout.nnz > KEEP_MAX_ENTRIES:
            return batches
        key = (batch_size, str(device))
        if key not in self._batches:
            self._batches[key] = list(batches)
        return self._batches[key]

    def _sparse_batch(self, rows: np.ndarray, device) -> tuple:
        x = sparse_rows(self.input, rows, device)
        exclude = x if self.exclude is self.input else sparse_rows(self.exclude, rows, device)
        held = sparse_rows(self.holdout, rows, device)
        for part in (x, held, exclude):
            # Made now, with the rest of the kept batches, rather than when a validation first
            # reads it: kept small tensors made between a validation's (B, n_items) blocks
            # split the holes those leave, and the heap grows batch by batch (ract.evaluate's
            # `_fill` says more).
            part.row_ids  # noqa: B018 - a cached property, computed here
        return rows, x, held, exclude


@dataclass(frozen=True)
class SplitData:
    path: Path
    manifest: dict
    train: sp.csr_matrix
    validation: EvalSplit
    test: EvalSplit

    @property
    def n_items(self) -> int:
        return self.manifest["n_items"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def eval_split(self, name: str) -> EvalSplit:
        if name not in EVAL_SPLITS:
            raise RactError(f"split: expected one of {', '.join(EVAL_SPLITS)}, got {name!r}")
        return getattr(self, name)

    def check_evaluable(self, name: str) -> None:
        """Refuse a held-out split none of whose users has an item to predict (`ract prepare`
        refuses to write one; older splits may be such): its metrics are all undefined."""
        holdout = self.eval_split(name).holdout
        if not n_evaluable(holdout):
            raise RactError(
                f"{self.path}: no {name} user has a held-out item (all "
                f"{holdout.shape[0]} keep every item as fold-in), so nothing can "
                "be evaluated; run `ract prepare` again, which says which setting "
                "to change"
            )

    def users(self, split: str) -> pd.DataFrame:
        table = pd.read_csv(self.path / "users.csv", dtype={"user": str})
        return table[table["split"] == split].reset_index(drop=True)

    def items(self) -> np.ndarray:
        return pd.read_csv(self.path / "items.csv", dtype={"item": str})["item"].to_numpy()


def _load_matrix(path: Path, n_items: int) -> sp.csr_matrix:
    if not path.exists():
        raise RactError(
            f"{path}: file not found; the split folder is incomplete, prepare it again"
        )
    try:
        m = sp.load_npz(path).tocsr()
    except Exception as exc:  # a damaged zip or foreign file
        raise RactError(f"{path}: not a readable sparse matrix ({exc})") from None
    if m.shape[1] != n_items:
        raise RactError(f"{path}: has {m.shape[1]} item columns, manifest says {n_items}")
    return m


def load_split(path) -> SplitData:
    """Load a split folder, checking that it is complete and consistent with its manifest."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise RactError(
            f"{manifest_path}: file not found; expected a folder written by `ract prepare`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RactError(f"{manifest_path}: not valid JSON ({exc})") from None
    if manifest.get("format_version") != SPLIT_FORMAT_VERSION:
        raise RactError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
            f"this ract reads {SPLIT_FORMAT_VERSION}; prepare the data again"
        )
    n_items = manifest["n_items"]
    mats = {}
    for name in manifest["matrices"]:
        mats[name] = _load_matrix(path / f"{name}.npz", n_items)
    evals = {
        s: EvalSplit(
            mats[f"{s}_input"], mats[f"{s}_holdout"], mats.get(f"{s}_exclude", mats[f"{s}_input"])
        )
        for s in EVAL_SPLITS
    }
    return SplitData(path, manifest, mats["train"], evals["validation"], evals["test"])


def dense_rows(m: sp.csr_matrix, rows, device) -> torch.Tensor:
    """Rows of a sparse matrix as a dense float32 tensor (B, n_items): only a batch is
    densified."""
    return torch.from_numpy(m[rows].toarray()).to(device)


def dense_mask(m: sp.csr_matrix, rows, device) -> torch.Tensor:
    """Rows of a sparse matrix as a dense bool tensor (B, n_items), True where an entry is
    positive: `dense_rows(...) > 0` in a quarter of the memory."""
    part = m[rows]
    out = torch.zeros(part.shape, dtype=torch.bool)
    row_of = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
    out[torch.from_numpy(row_of), torch.from_numpy(part.indices.astype(np.int64))] = (
        torch.from_numpy(part.data > 0)
    )
    return out.to(device)


def sparse_rows(m: sp.csr_matrix, rows, device) -> SparseRows:
    """Rows of a CSR matrix as a `SparseRows` batch (no dense matrix is built)."""
    part = m[rows]
    return SparseRows(
        torch.from_numpy(part.indptr.astype(np.int64)).to(device),
        torch.from_numpy(part.indices.astype(np.int64)).to(device),
        torch.from_numpy(part.data.astype(np.float32, copy=False)).to(device),
        m.shape[1],
    )

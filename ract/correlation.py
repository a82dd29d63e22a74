"""Pearson's r without torch: training (per epoch) and the comparison report (per figure) both
use it, and the report's process then needs no torch, a second of import for one coefficient."""

from __future__ import annotations

import math

import numpy as np


def pearson(a, b) -> float:
    """Pearson r of two equal-length sequences (tensors on any device, arrays, lists, pandas
    columns) over the pairs where neither is NaN; NaN with fewer than two such pairs or no
    spread. Always this float64 formula, so a value is the same in a history and a report."""
    a, b = _float64(a), _float64(b)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else math.nan


def _float64(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, wherever it lives
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()

"""Paired significance tests for comparing two models on the same users.

The unit of comparison is the user: both models are evaluated on the same users, so each user
contributes one paired difference `b - a` (b the challenger, e.g. RaCT; a the baseline, e.g.
Mult-VAE). A positive `mean_diff` means b is better on metrics where higher is better.

The verdict ("b better", "b worse", "no detectable difference") is read from the 95% paired
bootstrap interval of the mean difference, never from a p-value alone: a p-value says nothing
about the direction, and the Wilcoxon test answers a question about medians of ranks that can
disagree in sign with the mean (one small run was "significant" with a mean difference of
-0.0006, 95% CI -0.0020 to +0.0007).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sst

from .errors import RactError


def _vector(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise RactError(f"{name}: expected one value per user (1-D), got shape {v.shape}")
    return v


BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20200426  # fixed: the same inputs give the same interval


def bootstrap_interval(
    diff: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    chunk: int = 1000,
) -> tuple[float, float]:
    """95% percentile interval of mean(diff) over users resampled with replacement."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):  # chunks bound the (chunk, n) index matrix
        rows = min(chunk, resamples - start)
        means[start : start + rows] = diff[rng.integers(0, diff.size, (rows, diff.size))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """Direction of b - a from a 95% interval: "better" when it lies above 0, "worse" when it
    lies below, otherwise "no detectable difference"."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no detectable difference"


def paired_test(a, b) -> dict:
    """Paired comparison of per-user metric values `a` (baseline) and `b` (challenger).

    Users where either value is NaN (e.g. no held-out items) are dropped. Returns n, means,
    mean_diff = mean(b - a), its t-based 95% CI, the paired t-test (scipy `ttest_rel`), the
    Wilcoxon signed-rank test, Cohen's d_z = mean_diff / std(b - a, ddof=1), and the counts of
    users where b wins, loses or ties.

    Also the paired bootstrap 95% interval of the mean difference (`boot_low`, `boot_high`),
    which decides `verdict` (see `verdict`); the t interval is reported beside it.

    Wilcoxon uses zero_method="zsplit": users with a zero difference (on top-k metrics often
    many: both models rank the same items) are ranked and their ranks split evenly between the
    two signs, so ties count as evidence of no difference; "wilcox" drops them, and then a
    handful of users who differ, among hundreds tied, decide the test alone. If every
    difference is zero, both p-values are 1.0 and the statistics 0. If the differences are a
    nonzero constant (std 0), t and d_z are +-inf and the t p-value 0.
    """
    a, b = _paired_users(a, b)
    n, diff = int(a.size), b - a
    mean_diff = float(diff.mean())
    boot_low, boot_high = bootstrap_interval(diff)
    t_stat, t_p, dz, half = _t_test(a, b, diff)
    w_stat, w_p = _wilcoxon(a, b, diff)
    return {
        "n": n,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": mean_diff,
        "ci95_low": mean_diff - half,
        "ci95_high": mean_diff + half,
        "boot_low": boot_low,
        "boot_high": boot_high,
        "interval": "paired bootstrap over users, 95% percentile, "
        f"{BOOTSTRAP_RESAMPLES} resamples",
        "verdict": verdict(boot_low, boot_high),
        "t_statistic": t_stat,
        "t_pvalue": t_p,
        "wilcoxon_statistic": w_stat,
        "wilcoxon_pvalue": w_p,
        "effect_size_dz": dz,
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
        "ties": int((diff == 0).sum()),
    }


def _paired_users(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The two models' values on the users that have both (at least two users)."""
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise RactError(
            f"paired test: a has {a.size} users, b has {b.size}; they must be the "
            "same users in the same order"
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise RactError(
            f"paired test: needs at least 2 users with values for both models, got {a.size}"
        )
    return a, b


def _t_test(a, b, diff) -> tuple[float, float, float, float]:
    """The paired t-test: (t, p, Cohen's d_z, half-width of the 95% t interval)."""
    mean_diff, sd = float(diff.mean()), float(diff.std(ddof=1))
    # Differences equal up to rounding count as constant: scipy would report a meaningless t.
    if sd <= 1e-12 * max(1.0, float(np.abs(diff).max())):
        if mean_diff == 0.0 or np.all(diff == 0):
            return 0.0, 1.0, 0.0, 0.0
        return math.copysign(math.inf, mean_diff), 0.0, math.copysign(math.inf, mean_diff), 0.0
    res = sst.ttest_rel(b, a)
    half = float(sst.t.ppf(0.975, diff.size - 1)) * sd / math.sqrt(diff.size)
    return float(res.statistic), float(res.pvalue), mean_diff / sd, half


def _wilcoxon(a, b, diff) -> tuple[float, float]:
    """The Wilcoxon signed-rank test, ties split between the signs: (statistic, p)."""
    if np.all(diff == 0):
        return 0.0, 1.0
    res = sst.wilcoxon(b, a, zero_method="zsplit")
    return float(res.statistic), float(res.pvalue)


def paired_test_over_seeds(a_by_seed, b_by_seed) -> dict:
    """`paired_test` on each user's metric averaged over seeds (one array per seed, same users
    in the same order in all of them; a and b may have different numbers of seeds).

    Users are the independent units: every seed evaluates the same users, so pooling
    (user, seed) pairs would count each user several times and overstate the evidence. Averaging
    per user first keeps n = number of users and folds seed variance into each user's value.
    A user NaN under any seed is dropped.
    """
    means = []
    for name, by_seed in (("a", a_by_seed), ("b", b_by_seed)):
        arrays = [_vector(x, f"{name} seed {i}") for i, x in enumerate(by_seed)]
        if not arrays:
            raise RactError(f"paired test over seeds: {name} has no seeds")
        sizes = {v.size for v in arrays}
        if len(sizes) != 1:
            raise RactError(
                f"paired test over seeds: {name}'s seeds cover different numbers "
                f"of users ({', '.join(str(v.size) for v in arrays)})"
            )
        means.append(np.stack(arrays).mean(axis=0))
    return paired_test(*means)


def paired_tests(by_model, pairs, *, metric: str = "ndcg@100", split: str = "test") -> list[dict]:
    """`paired_test_over_seeds` for each (a, b) of `pairs`, on `by_model` ({model name: [the
    per-user metric of each seed]}): one record per pair, the metric, split and both names
    first."""
    return [
        {
            "metric": metric,
            "split": split,
            "a": a,
            "b": b,
            **paired_test_over_seeds(by_model[a], by_model[b]),
        }
        for a, b in pairs
    ]

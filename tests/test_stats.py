"""Paired tests on synthetic per-user metrics with known effects."""

import math

import numpy as np
import pytest

from ract.errors import RactError
from ract.stats import paired_test, paired_test_over_seeds, paired_tests


def test_known_effect_is_detected():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.6, size=200)
    b = a + 0.05 + rng.normal(0, 0.02, size=200)
    r = paired_test(a, b)
    assert r["n"] == 200
    assert r["mean_diff"] == pytest.approx(np.mean(b - a))
    assert r["mean_b"] - r["mean_a"] == pytest.approx(r["mean_diff"])
    assert r["t_pvalue"] < 1e-6 and r["wilcoxon_pvalue"] < 1e-6
    assert r["t_statistic"] > 0
    assert r["ci95_low"] < 0.05 < r["ci95_high"]
    assert r["effect_size_dz"] == pytest.approx(np.mean(b - a) / np.std(b - a, ddof=1))
    assert r["effect_size_dz"] > 2
    assert r["wins"] + r["losses"] + r["ties"] == 200 and r["wins"] > 190


def test_ci_matches_t_formula():
    d = np.array([0.1, -0.2, 0.3, 0.05, 0.0, 0.15])
    r = paired_test(np.zeros(6), d)
    half = 2.570581835636314 * d.std(ddof=1) / math.sqrt(6)  # t_{0.975, 5}
    assert r["ci95_low"] == pytest.approx(d.mean() - half)
    assert r["ci95_high"] == pytest.approx(d.mean() + half)
    assert (r["wins"], r["losses"], r["ties"]) == (4, 1, 1)


def test_swapping_models_flips_the_sign():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    ab, ba = paired_test(a, b), paired_test(b, a)
    assert ab["mean_diff"] == pytest.approx(-ba["mean_diff"])
    assert ab["t_pvalue"] == pytest.approx(ba["t_pvalue"])
    assert ab["wilcoxon_pvalue"] == pytest.approx(ba["wilcoxon_pvalue"])
    assert (ab["wins"], ab["losses"]) == (ba["losses"], ba["wins"])


def test_no_effect_is_not_significant():
    rng = np.random.default_rng(7)
    a = rng.uniform(0.2, 0.6, size=200)
    noise = rng.normal(0, 0.05, size=100)
    b = a + np.concatenate([noise, -noise])  # mean exactly 0, symmetric
    r = paired_test(a, b)
    assert r["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert r["t_pvalue"] > 0.05 and r["wilcoxon_pvalue"] > 0.05
    assert r["ci95_low"] < 0 < r["ci95_high"]


def test_all_equal_gives_p_one_and_all_ties():
    a = np.array([0.1, 0.5, 0.0, 0.3])
    r = paired_test(a, a.copy())
    assert r["t_pvalue"] == 1.0 and r["wilcoxon_pvalue"] == 1.0
    assert r["effect_size_dz"] == 0.0 and r["mean_diff"] == 0.0
    assert r["ci95_low"] == r["ci95_high"] == 0.0
    assert (r["wins"], r["losses"], r["ties"]) == (0, 0, 4)


def test_constant_nonzero_difference():
    a = np.array([0.1, 0.5, 0.0, 0.3])
    r = paired_test(a, a + 0.25)
    assert r["mean_diff"] == pytest.approx(0.25)
    assert r["t_pvalue"] == 0.0 and r["effect_size_dz"] == math.inf
    assert r["wins"] == 4


def test_nan_pairs_are_dropped():
    a = np.array([0.1, np.nan, 0.3, 0.4, 0.2, 0.6])
    b = np.array([0.2, 0.5, np.nan, 0.5, 0.1, 0.9])
    r = paired_test(a, b)
    ref = paired_test([0.1, 0.4, 0.2, 0.6], [0.2, 0.5, 0.1, 0.9])
    assert r == ref
    assert r["n"] == 4


def test_accepts_lists_and_tensors():
    torch = pytest.importorskip("torch")
    a = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    assert paired_test(a, [0.2, 0.2, 0.5])["n"] == 3


@pytest.mark.parametrize(
    "a, b, match",
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "same users"),
        ([0.1], [0.2], "at least 2"),
        ([0.1, np.nan, 0.3], [0.2, 0.1, np.nan], "at least 2"),
        ([[0.1, 0.2]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_errors(a, b, match):
    with pytest.raises(RactError, match=match):
        paired_test(a, b)


def test_over_seeds_averages_per_user_first():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.6, size=100)
    a_seeds = [base + rng.normal(0, 0.01, 100) for _ in range(3)]
    b_seeds = [base + 0.03 + rng.normal(0, 0.01, 100) for _ in range(3)]
    b_seeds[1][5] = np.nan  # user 5 dropped entirely
    r = paired_test_over_seeds(a_seeds, b_seeds)
    a_mean, b_mean = np.mean(a_seeds, axis=0), np.mean(b_seeds, axis=0)
    assert r == paired_test(a_mean, b_mean)
    assert r["n"] == 99  # users, not users x seeds
    assert r["t_pvalue"] < 1e-6


def test_paired_tests_one_record_per_pair_in_order():
    rng = np.random.default_rng(4)
    by_model = {m: [rng.uniform(0, 1, 30) for _ in range(2)] for m in ("A", "B", "C")}
    records = paired_tests(by_model, [("A", "B"), ("C", "B")])
    assert [(r["metric"], r["split"], r["a"], r["b"]) for r in records] == [
        ("ndcg@100", "test", "A", "B"),
        ("ndcg@100", "test", "C", "B"),
    ]
    assert records[1] == {
        "metric": "ndcg@100",
        "split": "test",
        "a": "C",
        "b": "B",
        **paired_test_over_seeds(by_model["C"], by_model["B"]),
    }


def test_over_seeds_errors():
    with pytest.raises(RactError, match="no seeds"):
        paired_test_over_seeds([], [[0.1, 0.2]])
    with pytest.raises(RactError, match="different numbers"):
        paired_test_over_seeds([[0.1, 0.2], [0.1, 0.2, 0.3]], [[0.1, 0.2]])
    with pytest.raises(RactError, match="same users"):
        paired_test_over_seeds([[0.1, 0.2]], [[0.1, 0.2, 0.3]])


@pytest.mark.parametrize(
    "shift, expected", [(0.03, "better"), (-0.03, "worse"), (0.0, "no detectable difference")]
)
def test_verdict_direction_from_the_interval(shift, expected):
    rng = np.random.default_rng(11)
    a = rng.uniform(0.2, 0.6, size=300)
    noise = rng.normal(0, 0.05, size=150)
    b = a + shift + np.concatenate([noise, -noise])  # mean difference exactly `shift`
    r = paired_test(a, b)
    assert r["verdict"] == expected
    assert r["boot_low"] < r["mean_diff"] < r["boot_high"]
    assert r["boot_low"] == pytest.approx(r["ci95_low"], abs=0.004)  # bootstrap ~ t here
    if expected == "no detectable difference":
        assert r["boot_low"] < 0 < r["boot_high"]


@pytest.mark.parametrize("sign, expected", [(1, "better"), (-1, "worse")])
def test_verdict_with_mostly_exact_ties(sign, expected):
    # 900 users tied (both models score the same), 100 differ, all in one direction
    rng = np.random.default_rng(3)
    a = rng.uniform(0.1, 0.5, size=1000)
    b = a.copy()
    b[:100] += sign * rng.uniform(0.01, 0.05, size=100)
    r = paired_test(a, b)
    assert r["ties"] == 900 and r["verdict"] == expected
    assert r["wilcoxon_pvalue"] < 1e-6


def test_ties_count_as_no_difference():
    # 18 of 400 users differ, most of them up: dropping the 382 ties ("wilcox") calls this
    # significant; splitting the ties' ranks between the signs ("zsplit") does not.
    a = np.full(400, 0.3)
    b = a.copy()
    b[:14] += 0.01
    b[14:18] -= 0.001
    r = paired_test(a, b)
    from scipy import stats as sst

    assert sst.wilcoxon(b, a, zero_method="wilcox").pvalue < 0.05
    assert r["wilcoxon_pvalue"] > 0.05 and r["ties"] == 382


def test_a_wilcoxon_p_below_005_with_an_interval_across_zero_is_no_difference():
    # Many small gains and a few large losses: the signed ranks favour b, the mean does not.
    rng = np.random.default_rng(5)
    a = rng.uniform(0.2, 0.6, size=200)
    diff = np.concatenate([rng.uniform(0.001, 0.003, 150), -rng.uniform(0.0, 0.02, 50)])
    r = paired_test(a, a + diff)
    assert r["wilcoxon_pvalue"] < 0.05
    assert r["boot_low"] < 0 < r["boot_high"] or r["verdict"] == "worse"
    assert r["verdict"] != "better"

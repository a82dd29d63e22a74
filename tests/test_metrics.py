"""Metric functions against hand-computed cases."""

import math

import pytest
import torch

from ract.metrics import ranking_metrics, summarise, top_k_items

INF = math.inf


def d(r):  # discount at rank r (1-based)
    return 1.0 / math.log2(r + 1)


def test_hand_computed_single_user():
    # ranking: items 3, 1, 4, 0, 2 (scores descending); held-out {1, 2}
    scores = torch.tensor([[0.5, 0.8, 0.1, 0.9, 0.7]])
    rel = torch.tensor([[False, True, True, False, False]])
    m = ranking_metrics(scores, rel, (1, 2, 5))
    assert m["ndcg@1"].item() == 0.0
    assert m["ndcg@2"].item() == pytest.approx(d(2) / (d(1) + d(2)))
    assert m["ndcg@5"].item() == pytest.approx((d(2) + d(5)) / (d(1) + d(2)))
    assert m["recall@1"].item() == 0.0
    assert m["recall@2"].item() == pytest.approx(1 / 2)  # 1 hit / min(2, 2)
    assert m["recall@5"].item() == pytest.approx(1.0)
    assert m["recall_recbole@2"].item() == pytest.approx(1 / 2)
    assert m["mrr@1"].item() == 0.0
    assert m["mrr@5"].item() == pytest.approx(1 / 2)
    assert m["hit@1"].item() == 0.0 and m["hit@2"].item() == 1.0
    assert m["precision@2"].item() == pytest.approx(1 / 2)
    assert m["precision@5"].item() == pytest.approx(2 / 5)


def test_paper_recall_normalises_by_min_k_heldout_recbole_does_not():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    rel = torch.tensor([[True, False, True, True, True, False]])  # 4 held-out
    m = ranking_metrics(scores, rel, (2,))
    assert m["recall@2"].item() == pytest.approx(1 / 2)  # 1 hit / min(2, 4)
    assert m["recall_recbole@2"].item() == pytest.approx(1 / 4)
    assert m["ndcg@2"].item() == pytest.approx(d(1) / (d(1) + d(2)))


def test_ties_break_towards_lower_item_index():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert top_k_items(scores, 2).tolist() == [[1, 2]]
    assert top_k_items(scores, 4).tolist() == [[1, 2, 3, 0]]
    # tied items straddling the cut: the lower index wins, so item 3 is not in the top 2
    rel = torch.tensor([[False, False, False, True, False]])
    m = ranking_metrics(scores, rel, (2, 3))
    assert m["ndcg@2"].item() == 0.0
    assert m["ndcg@3"].item() == pytest.approx(d(3) / d(1))
    # all scores tied: ranking is item order
    flat = torch.zeros(2, 4)
    assert top_k_items(flat, 3).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_empty_heldout_is_nan_and_skipped_in_summary():
    scores = torch.tensor([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    rel = torch.tensor([[True, False, False], [False, False, False]])
    m = ranking_metrics(scores, rel, (2,))
    for name, value in m.items():
        assert not math.isnan(value[0].item()), name
        assert math.isnan(value[1].item()), name
    s = summarise(m)
    assert s["ndcg@2"]["n_users"] == 1
    assert s["ndcg@2"]["mean"] == pytest.approx(1.0)


def test_k_larger_than_item_count_and_excluded_items_never_hit():
    # 3 items; item 0 excluded (fold-in); held-out {2}
    scores = torch.tensor([[-INF, 0.1, 0.5]])
    rel = torch.tensor([[False, False, True]])
    m = ranking_metrics(scores, rel, (2, 10))
    assert m["ndcg@10"].item() == pytest.approx(1.0)
    assert m["recall@10"].item() == pytest.approx(1.0)
    assert m["precision@10"].item() == pytest.approx(1 / 10)
    # a held-out item that is also excluded can't be hit, even when k reaches it
    scores = torch.tensor([[-INF, 0.1, 0.5]])
    rel = torch.tensor([[True, False, False]])
    m = ranking_metrics(scores, rel, (10,))
    assert m["hit@10"].item() == 0.0


def test_batched_equals_one_user_at_a_time():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 50, generator=g)
    rel = torch.rand(64, 50, generator=g) < 0.1
    batch = ranking_metrics(scores, rel, (5, 20))
    for u in range(64):
        single = ranking_metrics(scores[u : u + 1], rel[u : u + 1], (5, 20))
        for key in batch:
            a, b = batch[key][u].item(), single[key][0].item()
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), key


def test_summary_standard_error():
    s = summarise({"x": torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)})
    assert s["x"]["mean"] == pytest.approx(0.5)
    assert s["x"]["se"] == pytest.approx(math.sqrt(1 / 3) / 2)


def test_invalid_k_rejected():
    with pytest.raises(ValueError):
        ranking_metrics(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), (0,))


def test_pearson_takes_any_sequence_skips_nan_pairs_and_needs_no_torch():
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    from ract.correlation import pearson

    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = 0.3 * a + rng.normal(size=200)
    want = np.corrcoef(a, b)[0, 1]
    for x, y in ((a, b), (list(a), list(b)), (pd.Series(a), pd.Series(b))):
        assert pearson(x, y) == pytest.approx(want, abs=1e-12)
    r32 = pearson(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert r32 == pytest.approx(want, abs=1e-6)  # a float32 tensor, taken as float64
    holes_a, holes_b = a.copy(), b.copy()
    holes_a[3], holes_b[[3, 7]] = np.nan, np.nan  # pairs 3 and 7 are left out
    keep = np.setdiff1d(np.arange(200), [3, 7])
    assert pearson(holes_a, holes_b) == pytest.approx(np.corrcoef(a[keep], b[keep])[0, 1])
    assert math.isnan(pearson([1.0], [2.0]))  # fewer than two pairs
    assert math.isnan(pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))  # no spread
    assert math.isnan(pearson([np.nan, np.nan], [1.0, 2.0]))
    # the comparison report's process draws the critic's fit without importing torch
    code = "import sys, ract.correlation, ract.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

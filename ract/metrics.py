"""Ranking metrics as batched tensor code (SPEC 1).

All functions take a batch of users at once: `scores` (B, n_items) with excluded items already
set to -inf, and `relevant` (B, n_items) bool marking each user's held-out items. No Python loop
over users. Users without held-out items get NaN for every metric; summaries skip them and
report how many were skipped.

Definitions (binary relevance, ranks r = 1..k):
- NDCG@k    = sum_r rel_r / log2(r + 1), divided by the ideal DCG over min(|held-out|, k) items.
- Recall@k  = hits@k / min(k, |held-out|)   (the paper's normalised recall; Liang et al. 2018)
- RecallRB@k = hits@k / |held-out|          (RecBole's recall)
- MRR@k     = 1 / rank of the first hit within k, 0 if none
- Hit@k     = 1 if any hit within k
- Precision@k = hits@k / k
"""

from __future__ import annotations

import math

import torch

METRICS = ("ndcg", "recall", "recall_recbole", "mrr", "hit", "precision")


def top_k_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best items per row, best first; ties go to the lower item index.

    `torch.topk` alone leaves the order of tied scores unspecified, which would make metrics
    depend on the backend. One topk of k + 1 decides most rows: where the (k+1)-th score is
    below the k-th, the k items are exactly determined, and only rows with equal scores among
    them need reordering by index. Rows with a tie across the cut (rare with float scores;
    many -inf) take the exact path of `_top_k_exact`.
    """
    k = min(k, scores.shape[1])
    if k == scores.shape[1]:
        return _top_k_exact(scores, k)
    values, idx = torch.topk(scores, k + 1, dim=1)  # (B, k + 1), best first
    top = idx[:, :k].contiguous()  # (B, k)
    tied = (values[:, 1:k] == values[:, : k - 1]).any(dim=1).nonzero().flatten()
    if tied.numel():  # equal scores among the k: put them in item order
        sub = top[tied].sort(dim=1).values
        order = torch.sort(
            scores[tied].gather(1, sub), dim=1, descending=True, stable=True
        ).indices
        top[tied] = sub.gather(1, order)
    cut = (values[:, k] == values[:, k - 1]).nonzero().flatten()
    if cut.numel():
        top[cut] = _top_k_exact(scores[cut], k)
    return top


def _top_k_exact(scores: torch.Tensor, k: int) -> torch.Tensor:
    """top_k_items for any row: the k-th largest score is found with topk, every item above it
    is taken, and the remaining slots are filled with the lowest-indexed items equal to it.
    Several passes over (B, n_items), so only used for rows with a tie at the cut."""
    kth = torch.topk(scores, k, dim=1).values[:, -1:]  # (B, 1)
    above = scores > kth  # (B, n_items)
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)  # (B, 1)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))  # exactly k per row
    idx = chosen.nonzero()[:, 1].view(scores.shape[0], k)  # (B, k), ascending item index
    order = torch.sort(scores.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _discounts(k: int, device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))  # (k,)


def ndcg_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k from (B, >=k) hit indicators in rank order and (B,) counts of relevant items."""
    disc = _discounts(k, hits.device)
    dcg = (hits[:, :k].double() * disc[: hits[:, :k].shape[1]]).sum(dim=1)
    ideal = torch.cat([disc.new_zeros(1), disc.cumsum(0)])  # ideal[m] = IDCG with m relevant
    idcg = ideal[n_relevant.clamp(max=k).long()]
    return torch.where(n_relevant > 0, dcg / idcg.clamp(min=1e-12), torch.nan)


def ranking_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...], metrics=METRICS
) -> dict[str, torch.Tensor]:
    """Per-user metrics for every (metric, k); returns {'ndcg@100': (B,) float64, ...}."""
    if not ks or min(ks) < 1:
        raise ValueError(f"k values must be >= 1, got {ks}")
    top = top_k_items(scores, max(ks))  # (B, K)
    hits = relevant.gather(1, top)  # (B, K) bool
    # An item ranked at -inf (excluded) can never be a hit, even when k exceeds what is left.
    hits &= torch.isfinite(scores.gather(1, top))
    n_rel = relevant.sum(dim=1)  # (B,)
    valid = n_rel > 0
    nan = torch.tensor(torch.nan, dtype=torch.float64, device=scores.device)
    out = {}
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(dim=1).double()
        per = {}
        if "ndcg" in metrics:
            per["ndcg"] = ndcg_from_hits(h, n_rel, k)
        if "recall" in metrics:
            per["recall"] = n_hits / n_rel.clamp(max=k, min=1)
        if "recall_recbole" in metrics:
            per["recall_recbole"] = n_hits / n_rel.clamp(min=1)
        if "mrr" in metrics:
            first = torch.where(h.any(dim=1), h.double().argmax(dim=1) + 1.0, math.inf)
            per["mrr"] = 1.0 / first
        if "hit" in metrics:
            per["hit"] = h.any(dim=1).double()
        if "precision" in metrics:
            per["precision"] = n_hits / k
        for name, value in per.items():
            out[f"{name}@{k}"] = torch.where(valid, value.double(), nan)
    return out


def summarise(per_user: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Mean and standard error (std with ddof=1 over sqrt(n)) of each metric over valid users."""
    summary = {}
    for name, values in per_user.items():
        v = values[~torch.isnan(values)].double()
        n = v.numel()
        mean = v.mean().item() if n else math.nan
        se = (v.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else math.nan
        summary[name] = {"mean": mean, "se": se, "n_users": n}
    return summary

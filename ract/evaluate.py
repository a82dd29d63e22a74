"""Evaluation and recommendation from a trained model, the actor or a baseline (SPEC 1: score
all items, mask the user's known items, rank)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from .data.splits import EvalSplit, SplitData, dense_mask, dense_rows
from .errors import RactError
from .memory import EVAL_BATCH_SIZE
from .metrics import METRICS, ranking_metrics, summarise, top_k_items
from .model import ActorOutput, Critic, MultVAE, critic_features, critic_target
from .runtime import reuse_freed_memory

DEFAULT_KS = (20, 50, 100)


def check_ks(ks) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise RactError(f"setting ks: expected integers >= 1, got {list(ks)}")
    return tuple(sorted(set(ks)))


def eval_batches(split: EvalSplit, batch_size: int, device) -> Iterator[tuple]:
    """(rows, input, holdout, exclude) per batch of users, dense only per batch: the input
    float32, held-out and excluded items as bool masks (a quarter of the memory; the prepared
    matrices hold ones). Where the excluded items are the input itself (the strong protocol),
    exclude is the input tensor: callers only read them."""
    n = split.input.shape[0]
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        x_in = dense_rows(split.input, rows, device)
        exclude = x_in if split.exclude is split.input else dense_mask(split.exclude, rows, device)
        yield rows, x_in, dense_mask(split.holdout, rows, device), exclude


def masked_scores(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """The scores with excluded items at -inf; `exclude` a bool mask, or values > 0."""
    if torch.isnan(logits.sum()):  # one reduction, where isnan(...).any() is two full passes
        raise RactError("model produced NaN scores; the checkpoint is numerically broken")
    return logits.masked_fill(exclude if exclude.dtype == torch.bool else exclude > 0, -math.inf)


def score(model, x: torch.Tensor) -> torch.Tensor:
    """Scores (B, n_items) of any model: the actor's logits, or a baseline's output."""
    out = model(x)
    return out.logits if isinstance(out, ActorOutput) else out


def heldout_output(out: ActorOutput, x_in: torch.Tensor, holdout: torch.Tensor) -> ActorOutput:
    """The actor's eval-mode output on fold-in rows `x_in`, with fold-in as 'kept' and held-out
    (a bool mask) as 'dropped' -- the evaluation analogue of a training dropout mask, used for
    the critic's fit."""
    return ActorOutput(out.logits, out.mu, out.logvar, x_in > 0, holdout)


def critic_batch(
    critic: Critic, out: ActorOutput, x_full: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The critic's view of one batch of users, in eval mode: its prediction, its target (true
    NDCG@metrics_k of the dropped items given the kept ones; NaN with nothing dropped), the
    actor's NLL feature, and d prediction / d NLL (negative: lower NLL is scored higher)."""
    critic.eval()
    feats = critic_features(out, x_full).detach()
    with torch.enable_grad():
        f = feats.clone().requires_grad_(True)
        pred = critic(f)
        (grad,) = torch.autograd.grad(pred.sum(), f)
    return {
        "critic": pred.detach(),
        "target": critic_target(out, critic.cfg.metrics_k),
        "nll": feats[:, 2],
        "slope": grad[:, 2],
    }


@torch.no_grad()
def heldout_per_user(
    actor: MultVAE,
    split: EvalSplit,
    *,
    critic: Critic | None = None,
    metrics=(),
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
) -> dict[str, torch.Tensor]:
    """Per user of a held-out split, fold-in as input and held-out items as the relevant set:
    ranking metrics named as 'ndcg@100' (with the other computed combinations of their kinds
    and cut-offs) and, with a critic, `critic_batch`'s four values; concatenated over batches,
    on `device`. Validation (`ract.train.validate`) and the critic's fit tables both read it."""
    ks = tuple(sorted({int(name.split("@")[1]) for name in metrics}))
    kinds = tuple(dict.fromkeys(name.split("@")[0] for name in metrics))
    actor.eval()
    per_user: dict[str, torch.Tensor] = {}
    # the batches as the actor reads them, sparse, kept by the split for the next validation;
    # only the masks the ranking needs are made dense, per batch
    for rows, x, held, excluded in split.sparse_batches(batch_size, device):
        out = actor(x)
        holdout, per = held.mask(), {}
        if ks:
            per = ranking_metrics(masked_scores(out.logits, excluded.mask()), holdout, ks, kinds)
        if critic is not None:
            x_in = x.dense()
            per.update(critic_batch(critic, heldout_output(out, x_in, holdout), x_in + holdout))
        _fill(per_user, per, rows, split.input.shape[0])
    return per_user


def _fill(per_user: dict, batch: dict, rows: np.ndarray, n: int) -> None:
    """Copy a batch's per-user values into tensors of all `n` users, made at the first batch.
    Not a list of small tensors concatenated at the end: with freed memory kept in the heap
    (`reuse_freed_memory`), each batch's small results split the holes its (B, n_items)
    tensors left, which the next batch's then no longer fit, and the heap grew batch by batch
    (a critic stage on 20,000 users of 20,108 items peaked at 2.1 GB; 1.2 GB since)."""
    for key, value in batch.items():
        if key not in per_user:
            per_user[key] = value.new_empty(n)
        per_user[key][rows[0] : rows[-1] + 1] = value


def critic_fit(
    actor: MultVAE,
    critic: Critic,
    split: EvalSplit,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
) -> dict[str, torch.Tensor]:
    """Per user of a held-out split: `critic_batch`'s four values (float64, on the CPU)."""
    fit = heldout_per_user(actor, split, critic=critic, batch_size=batch_size, device=device)
    return {key: value.double().cpu() for key, value in fit.items()}


def critic_fit_frame(
    actor: MultVAE,
    critic: Critic,
    data: SplitData,
    split: str,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
) -> pd.DataFrame:
    """`critic_fit` as a table with the original user ids: user, n_input, n_holdout,
    ndcg@<metrics_k> (the true value the critic predicts), critic, nll, slope."""
    fit = critic_fit(actor, critic, data.eval_split(split), batch_size=batch_size, device=device)
    return user_table(data, split).assign(
        **{
            f"ndcg@{critic.cfg.metrics_k}": fit["target"].numpy(),
            "critic": fit["critic"].numpy(),
            "nll": fit["nll"].numpy(),
            "slope": fit["slope"].numpy(),
        }
    )


def user_table(data: SplitData, split: str) -> pd.DataFrame:
    """One row per user of a held-out split, in split order: original id, items given as input
    (fold-in) and items held out to predict."""
    es = data.eval_split(split)
    return pd.DataFrame(
        {
            "user": data.users(split)["user"].to_numpy(),
            "n_input": np.asarray(es.input.sum(axis=1)).ravel().astype(np.int64),
            "n_holdout": np.asarray(es.holdout.sum(axis=1)).ravel().astype(np.int64),
        }
    )


@torch.inference_mode()
def evaluate_model(
    model,
    split: EvalSplit,
    ks=DEFAULT_KS,
    metrics=METRICS,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
) -> dict[str, torch.Tensor]:
    """Per-user metrics (float64, NaN for users without held-out items) over the whole split,
    plus 'n_holdout' (items to predict per user). `model` is the actor or a baseline."""
    model.eval()
    per_user: dict[str, torch.Tensor] = {}
    for rows, x_in, holdout, exclude in eval_batches(split, batch_size, device):
        scores = masked_scores(score(model, x_in), exclude)
        per = ranking_metrics(scores, holdout > 0, ks, metrics)
        per["n_holdout"] = holdout.sum(dim=1).double()
        _fill(
            per_user, {key: value.cpu() for key, value in per.items()}, rows, split.input.shape[0]
        )
    return per_user


def evaluate_to_frames(
    model,
    data: SplitData,
    split: str,
    ks=DEFAULT_KS,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device="cpu",
):
    """(per-user DataFrame with original user ids, summary dict) for one split."""
    data.check_evaluable(split)
    reuse_freed_memory()
    per_user = evaluate_model(
        model, data.eval_split(split), check_ks(ks), batch_size=batch_size, device=device
    )
    n_holdout = per_user.pop("n_holdout")
    frame = user_table(data, split)
    for key, value in per_user.items():
        frame[key] = value.numpy()
    summary = {
        "split": split,
        "n_users": len(frame),
        "n_users_evaluated": int((n_holdout > 0).sum()),
        "n_users_without_holdout": int((n_holdout == 0).sum()),
        "metrics": summarise(per_user),
    }
    return frame, summary


def _top_n(
    model, x_in: torch.Tensor, exclude: torch.Tensor, n: int, items: np.ndarray
) -> pd.DataFrame:
    """Top-n unseen items of each row of `x_in` (B, n_items): row (position), rank, item
    (original id) and score; fewer than n where fewer items are unseen."""
    if n < 1:
        raise RactError(f"setting n: expected an integer >= 1, got {n}")
    scores = masked_scores(score(model, x_in), exclude)
    k = min(n, scores.shape[1])
    top = top_k_items(scores, k)  # (B, k)
    top_scores = scores.gather(1, top)
    ok = torch.isfinite(top_scores).cpu()  # fewer than n unseen items: drop the -inf fillers
    return pd.DataFrame(
        {
            "row": torch.arange(len(x_in)).repeat_interleave(k)[ok.flatten()].numpy(),
            "rank": torch.arange(1, k + 1).repeat(len(x_in), 1)[ok].numpy(),
            "item": items[top.cpu()[ok].numpy()],
            "score": top_scores.cpu()[ok].numpy(),
        }
    )


@torch.inference_mode()
def recommend(model, data: SplitData, users, n: int = 10, *, device="cpu") -> pd.DataFrame:
    """Top-n items (original ids) for users given by original id, from their known history
    (training row, or fold-in for held-out users); items they already have are excluded."""
    table = pd.read_csv(data.path / "users.csv", dtype={"user": str})
    wanted = pd.Series(list(dict.fromkeys(str(u) for u in users)), name="user")
    found = table.drop_duplicates("user").set_index("user").reindex(wanted)
    missing = wanted[found["split"].isna().to_numpy()]
    if len(missing):
        raise RactError(
            f"users not in {data.path / 'users.csv'}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    items = data.items()
    model.eval()
    frames = []
    for split, group in found.reset_index().groupby("split", sort=False):
        rows = group["index"].to_numpy(dtype=np.int64)
        if split == "train":
            x_in = exclude = dense_rows(data.train, rows, device)
        else:
            es = data.eval_split(split)
            x_in, exclude = (
                dense_rows(es.input, rows, device),
                dense_rows(es.exclude, rows, device),
            )
        top = _top_n(model, x_in, exclude, n, items)
        frames.append(
            top.assign(row=group["user"].to_numpy()[top["row"]]).rename(columns={"row": "user"})
        )
    out = pd.concat(frames, ignore_index=True)
    position = out["user"].map({u: i for i, u in enumerate(wanted)})
    return out.iloc[np.lexsort((out["rank"], position))].reset_index(drop=True)


@torch.inference_mode()
def recommend_for_items(
    model, data: SplitData, items, n: int = 10, *, device="cpu"
) -> tuple[pd.DataFrame, list[str]]:
    """Top-n items for a user who is not in the data, from the items they have (original ids):
    their row is folded in as a held-out user's is (strong generalisation). Returns the
    recommendations (rank, item, score) and the given ids the model does not know, which are
    skipped; none known is refused."""
    ids = data.items()
    known = pd.Series(np.arange(len(ids)), index=ids)  # original id -> column
    given = pd.Series(list(dict.fromkeys(str(i) for i in items)), dtype=str)
    columns = known.reindex(given)
    unknown = given[columns.isna().to_numpy()].tolist()
    if columns.notna().sum() == 0:
        raise RactError(
            f"none of the {len(given)} items given is in "
            f"{data.path / 'items.csv'}; expected original item ids of the data "
            "the model was trained on"
        )
    x = torch.zeros(1, data.n_items, device=device)  # (1, n_items)
    x[0, torch.tensor(columns.dropna().to_numpy(dtype=np.int64), device=device)] = 1.0
    model.eval()
    return _top_n(model, x, x, n, ids).drop(columns="row"), unknown

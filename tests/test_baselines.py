"""Popularity and EASE baselines: hand-checked closed forms, lambda selection, checkpoints."""

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ract import baselines
from ract.baselines import (
    EASE,
    Popularity,
    gram_matrix,
    load_baseline,
    mean_ndcg,
    save_baseline,
    select_ease_lambda,
)
from ract.data.splits import EvalSplit, SplitData
from ract.errors import RactError

X_HAND = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float32)


def csr(a):
    return sp.csr_matrix(np.asarray(a, dtype=np.float32))


def ease_numpy(X, lam):
    """The EASE formula written out directly, in float64."""
    G = X.T.astype(np.float64) @ X + lam * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def test_popularity_scores_are_column_sums():
    model = Popularity.fit(csr(X_HAND[:3]))
    assert model.counts.tolist() == [2.0, 2.0, 2.0]
    X = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [1, 0, 0, 1]], dtype=np.float32)
    model = Popularity.fit(csr(X))
    scores = model(torch.zeros(2, 4))
    assert scores.shape == (2, 4) and scores.dtype == torch.float32
    assert scores.tolist() == [[3.0, 1.0, 0.0, 2.0]] * 2
    scores[0, 0] = -math.inf  # scores are a real tensor, maskable in place
    assert model.counts[0] == 3.0


def test_ease_hand_derived():
    # X^T X = I + 2J (J all ones), so (X^T X + lam I)^-1 has equal diagonals and equal
    # off-diagonals, and B_ij = -P_ij / P_jj = 2 / (lam + 5) for i != j.
    for lam in (1.0, 10.0, 1000.0):
        model = EASE.fit(csr(X_HAND), lam)
        expected = np.full((3, 3), 2.0 / (lam + 5.0))
        np.fill_diagonal(expected, 0.0)
        np.testing.assert_allclose(model.B.numpy(), expected, rtol=1e-6)
        assert model.lam == lam
    # lam = 1: B_ij = 1/3, so a user with item 0 scores items 1, 2 at 1/3 and item 0 at 0
    scores = EASE.fit(csr(X_HAND), 1.0)(torch.tensor([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(scores.numpy(), [[0.0, 1 / 3, 1 / 3]], rtol=1e-6)


def test_ease_matches_numpy_formula_and_optimality():
    rng = np.random.default_rng(0)
    X = (rng.uniform(size=(60, 12)) < rng.uniform(0.05, 0.6, size=12)).astype(np.float32)
    lam = 5.0
    B = EASE.fit(csr(X), lam).B.numpy().astype(np.float64)
    np.testing.assert_allclose(B, ease_numpy(X, lam), rtol=1e-5, atol=1e-7)
    assert np.all(np.diag(B) == 0)
    # Stationarity of the constrained ridge problem: off the diagonal, (G + lam I) B = G.
    G = X.T.astype(np.float64) @ X
    resid = (G + lam * np.eye(12)) @ B - G
    np.fill_diagonal(resid, 0.0)
    assert np.abs(resid).max() < 1e-4
    # Strong regularisation: B -> G_ij / lam off the diagonal.
    big = 1e6
    B_big = EASE.fit(csr(X), big).B.numpy()
    off = G / big
    np.fill_diagonal(off, 0.0)
    np.testing.assert_allclose(B_big, off, rtol=1e-3, atol=1e-9)


def test_ease_float32_path(monkeypatch):
    rng = np.random.default_rng(1)
    X = csr(rng.uniform(size=(80, 20)) < 0.3)
    ref = EASE.fit(X, 10.0).B
    monkeypatch.setattr(baselines, "FLOAT64_MAX_ITEMS", 5)
    monkeypatch.setattr(baselines, "GRAM_BLOCK", 7)  # several uneven column blocks
    G = gram_matrix(X)
    assert G.dtype == torch.float32
    np.testing.assert_array_equal(G.numpy(), (X.T @ X).toarray())
    torch.testing.assert_close(EASE.fit(X, 10.0).B, ref, rtol=1e-4, atol=1e-6)


def ease_reference(G, lam):
    """B = I - P diag(1/diag(P)) with P = (G + lam I)^-1 by a dense solve, in float64; its
    diagonal is 1 - 1, set to exactly 0."""
    G = np.asarray(G, dtype=np.float64)
    P = np.linalg.solve(G + lam * np.eye(len(G)), np.eye(len(G)))
    B = np.eye(len(G)) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def skewed(seed, users=90, items=24):
    """Random 0/1 rows with item densities from 3% to 70%: X^T X is far from a multiple of I,
    so B is not symmetric and a transposed result shows."""
    rng = np.random.default_rng(seed)
    return csr(rng.uniform(size=(users, items)) < rng.uniform(0.03, 0.7, size=items))


@pytest.mark.parametrize("regime", ["float64", "float32"])
def test_in_place_fit_equals_a_dense_solve(regime, monkeypatch):
    if regime == "float32":
        monkeypatch.setattr(baselines, "FLOAT64_MAX_ITEMS", 5)
    X = skewed(3)
    gram = gram_matrix(X)
    assert gram.dtype == getattr(torch, regime)
    before = gram.clone()
    G = (X.T @ X).toarray()
    tol = {"rtol": 1e-9, "atol": 1e-12} if regime == "float64" else {"rtol": 2e-4, "atol": 1e-6}
    for lam in (0.5, 7.0, 300.0):
        ref = ease_reference(G, lam)
        assert np.abs(ref - ref.T).max() > 0.01 * np.abs(ref).max()  # B is not symmetric
        out = torch.full_like(gram, float("nan"))  # nothing of a previous fit may leak in
        B = baselines.ease_weights_(out, gram, lam)
        assert B.data_ptr() == out.data_ptr()
        np.testing.assert_allclose(B.numpy(), ref, **tol)
        assert torch.all(B.diagonal() == 0)
        model = EASE.from_gram(gram, lam)
        assert model.B.dtype == torch.float32 and model.lam == lam
        np.testing.assert_allclose(model.B.numpy(), ref, rtol=2e-4, atol=1e-6)
    assert torch.equal(gram, before)  # the Gram matrix is left as it was


def test_in_place_fit_reuses_one_work_matrix_across_lambdas():
    X = skewed(4)
    gram = gram_matrix(X)
    work = torch.empty_like(gram)
    for lam in (300.0, 1.0, 300.0):  # back to the first: nothing of the second remains
        baselines.ease_weights_(work, gram, lam)
        np.testing.assert_allclose(
            work.numpy(), ease_reference((X.T @ X).toarray(), lam), rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("lam", [0, -1, float("nan"), "abc"])
def test_ease_rejects_bad_lambda(lam):
    with pytest.raises(RactError, match="lambda"):
        EASE.fit(csr(X_HAND), lam)


# --- a small structured data set: two taste groups over two halves of the items, plus a
# handful of globally popular items that popularity will rank first for everyone.


def taste_matrix(n_users, n_items, rng, holdout_frac=None):
    rows, held = [], []
    half = n_items // 2
    for u in range(n_users):
        group = u % 2
        liked = rng.choice(np.arange(half) + group * half, size=rng.integers(8, 16), replace=False)
        popular = rng.choice(np.arange(4) + (1 - group) * half, size=2, replace=False)
        items = np.concatenate([liked, popular])
        row = np.zeros(n_items, dtype=np.float32)
        row[items] = 1
        if holdout_frac is None:
            rows.append(row)
            continue
        out = rng.choice(liked, size=max(1, int(len(liked) * holdout_frac)), replace=False)
        h = np.zeros(n_items, dtype=np.float32)
        h[out] = 1
        row[out] = 0
        rows.append(row)
        held.append(h)
    return (csr(rows), csr(held)) if held else csr(rows)


def taste_split(seed=0, n_items=40):
    rng = np.random.default_rng(seed)
    train = taste_matrix(300, n_items, rng)
    evals = []
    for _ in range(2):
        x_in, holdout = taste_matrix(60, n_items, rng, holdout_frac=0.3)
        evals.append(EvalSplit(x_in, holdout, x_in))
    manifest = {"n_items": n_items, "content_hash": "abc123" * 10}
    return SplitData(None, manifest, train, evals[0], evals[1])


def test_ease_beats_popularity_on_structured_data():
    data = taste_split()
    best, rows = select_ease_lambda(data, lambdas=(1, 10, 100, 1000))
    pop = Popularity.fit(data.train)
    ease_ndcg = mean_ndcg(best, data.test, 10)
    pop_ndcg = mean_ndcg(pop, data.test, 10)
    assert ease_ndcg > pop_ndcg + 0.2


def test_lambda_selection_returns_grid_argmax():
    data = taste_split(seed=2)
    grid = (0.5, 5, 50, 500, 5000)
    best, rows = select_ease_lambda(data, lambdas=grid, k=20)
    assert [r["lam"] for r in rows] == list(grid)
    scores = [r["val_ndcg@20"] for r in rows]
    assert len(set(scores)) > 1  # the grid actually matters here
    assert best.lam == grid[int(np.argmax(scores))]
    # each row is the validation NDCG of a model fitted with that lambda
    for lam, score in zip(grid, scores):
        assert mean_ndcg(EASE.fit(data.train, lam), data.validation, 20) == pytest.approx(score)
    torch.testing.assert_close(best.B, EASE.fit(data.train, best.lam).B)


@pytest.mark.parametrize("regime", ["float64", "float32"])
@pytest.mark.parametrize("chosen_last", [False, True])
def test_grid_chooses_and_returns_what_independent_fits_would(regime, chosen_last, monkeypatch):
    # The grid fits every lambda into one work matrix and fits the chosen one again at the
    # end unless it was the last; each row and the model returned must still be those of a
    # fit of that lambda alone.
    if regime == "float32":
        monkeypatch.setattr(baselines, "FLOAT64_MAX_ITEMS", 5)
    data = taste_split(seed=2)
    grid = [0.5, 5, 50, 500, 5000]
    alone = {lam: EASE.fit(data.train, lam) for lam in grid}
    scores = {lam: mean_ndcg(model, data.validation, 20) for lam, model in alone.items()}
    expected = max(grid, key=lambda lam: (scores[lam], -grid.index(lam)))
    assert expected != grid[-1]  # so that the refit is exercised
    if chosen_last:
        grid.remove(expected)
        grid.append(expected)
    best, rows = select_ease_lambda(data, lambdas=grid, k=20)
    assert [r["lam"] for r in rows] == grid
    assert [r["val_ndcg@20"] for r in rows] == pytest.approx([scores[lam] for lam in grid])
    assert best.lam == expected
    assert best.B.dtype == torch.float32
    torch.testing.assert_close(best.B, alone[expected].B)


def test_grid_logs_its_memory_estimate_once(caplog):
    data = taste_split()  # 40 items, 60 validation users
    with caplog.at_level(logging.INFO, logger="ract.baselines"):
        select_ease_lambda(data, lambdas=(10, 100, 1000))
    messages = [r.getMessage() for r in caplog.records]
    need = baselines.ease_fit_bytes(40, 60) / 2**30
    assert [m for m in messages if "estimated peak memory" in m] == [
        f"EASE: 40 items, 3 lambdas; estimated peak memory {need:.2f} GiB (ease_fit_bytes)"
    ]
    assert [m.split(":")[0] for m in messages if ": lambda " in m] == [
        "EASE 1/3",
        "EASE 2/3",
        "EASE 3/3",
    ]


def test_lambda_selection_refusals():
    data = taste_split()
    with pytest.raises(RactError, match="at least one"):
        select_ease_lambda(data, lambdas=())
    with pytest.raises(RactError, match="lambda"):
        select_ease_lambda(data, lambdas=(10, -5))
    empty = EvalSplit(data.validation.input, csr(np.zeros((60, 40))), data.validation.exclude)
    no_holdout = SplitData(None, data.manifest, data.train, empty, data.test)
    with pytest.raises(RactError, match="no users with held-out items"):
        select_ease_lambda(no_holdout, lambdas=(10,))


def test_mean_ndcg_masks_excluded_items():
    # Popularity ranks item 0 first; it is excluded for the user, so item 1 (held out) is first.
    pop = Popularity(torch.tensor([5.0, 4.0, 1.0]))
    split = EvalSplit(csr([[1, 0, 0]]), csr([[0, 1, 0]]), csr([[1, 0, 0]]))
    assert mean_ndcg(pop, split, 1) == 1.0


# --- checkpoints


def test_save_load_round_trip(tmp_path):
    data = taste_split()
    ease = EASE.fit(data.train, 20.0)
    pop = Popularity.fit(data.train)
    h = data.content_hash
    save_baseline(tmp_path / "ease.pt", ease, data_hash=h, extra={"metrics": {"ndcg@100": 0.5}})
    save_baseline(tmp_path / "pop.pt", pop, data_hash=h)
    e2 = load_baseline(tmp_path / "ease.pt", data_hash=h, n_items=40)
    p2 = load_baseline(tmp_path / "pop.pt", data_hash=h, n_items=40)
    assert isinstance(e2, EASE) and e2.lam == 20.0
    assert torch.equal(e2.B, ease.B)
    assert isinstance(p2, Popularity) and torch.equal(p2.counts, pop.counts)
    raw = torch.load(tmp_path / "ease.pt", weights_only=True)
    assert raw["format_version"] == 1 and raw["kind"] == "ease" and raw["lam"] == 20.0
    assert raw["data"] == {"content_hash": h, "n_items": 40}
    assert raw["metrics"] == {"ndcg@100": 0.5}
    assert torch.load(tmp_path / "pop.pt", weights_only=True)["kind"] == "popularity"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_save_refuses_other_models_and_clashing_extra(tmp_path):
    with pytest.raises(TypeError):
        save_baseline(tmp_path / "x.pt", torch.nn.Linear(2, 2), data_hash="h")
    with pytest.raises(ValueError, match="kind"):
        save_baseline(
            tmp_path / "x.pt", Popularity(torch.ones(3)), data_hash="h", extra={"kind": "ease"}
        )
    assert not (tmp_path / "x.pt").exists()


class Payload:  # a pickled object that weights_only loading must refuse
    pass


def test_load_refusals(tmp_path):
    good = tmp_path / "good.pt"
    save_baseline(good, EASE.fit(csr(X_HAND), 1.0), data_hash="h" * 20)

    with pytest.raises(RactError, match="missing.pt: baseline checkpoint file not found"):
        load_baseline(tmp_path / "missing.pt")

    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(RactError, match="text.pt: not a loadable"):
        load_baseline(text)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format_version": 1, "kind": "ease", "obj": Payload()}, pickled)
    with pytest.raises(RactError, match="pickled.pt: not a loadable"):
        load_baseline(pickled)

    actor_like = tmp_path / "actor.pt"
    torch.save({"format_version": 1, "actor_state": {}, "data": {}}, actor_like)
    with pytest.raises(RactError, match="actor.pt: not a ract baseline checkpoint"):
        load_baseline(actor_like)

    state = torch.load(good, weights_only=True)
    broken = tmp_path / "broken.pt"
    torch.save({**state, "state": {"B": torch.zeros(3, 3), "extra": torch.zeros(1)}}, broken)
    with pytest.raises(RactError, match="broken.pt: not a ract baseline checkpoint"):
        load_baseline(broken)
    torch.save({**state, "state": {"B": torch.zeros(2, 3)}}, broken)
    with pytest.raises(RactError, match="broken.pt: not a ract baseline checkpoint"):
        load_baseline(broken)
    torch.save({**state, "state": {"B": torch.zeros(4, 4)}}, broken)
    with pytest.raises(RactError, match="broken.pt: .*inconsistent"):
        load_baseline(broken)

    with pytest.raises(RactError, match="good.pt: .*hash"):
        load_baseline(good, data_hash="other")
    with pytest.raises(RactError, match="good.pt: .*3 items, this split has 5"):
        load_baseline(good, n_items=5)
    assert isinstance(load_baseline(good, data_hash="h" * 20, n_items=3), EASE)


def test_memory_estimate_is_the_documented_formula():
    fixed, cell = 16 * 2**20, 28  # EASE_FIXED_BYTES, EVAL_CELL_BYTES
    # float64 up to FLOAT64_MAX_ITEMS items: X^T X, the work matrix and the float32 model;
    # float32 above: X^T X and the work matrix
    for n, rows, per_cell in ((40, 60, 8 + 8 + 4), (5000, 1000, 8 + 8 + 4), (5001, 7, 4 + 4)):
        assert baselines.ease_fit_bytes(n, rows) == per_cell * n * n + cell * rows * n + fixed
    assert baselines.ease_fit_bytes(20_000) == baselines.ease_fit_bytes(20_000, 1000)

    def matrices(n):
        return baselines.ease_fit_bytes(n, 1000) - cell * 1000 * n - fixed

    for n in (1000, 2000, 6000, 12_000):  # n and 2n in the same regime
        assert matrices(2 * n) == 4 * matrices(n)


def test_fit_ease_asks_for_the_memory_its_data_needs(monkeypatch):
    """The job's request: the estimate with 10% to spare, 512 MiB of process and 16 bytes per
    interaction, never below 8000 MB; its budget is that, or the memory free if less."""
    from ract import memory, runtime

    fit = memory.ease_fit_bytes(41_140)
    want = math.ceil((1.1 * fit + 512 * 2**20 + 16 * 33_000_000) / 2**20)
    assert memory.ease_job_mb(41_140, 33_000_000) == want > 16_000  # MSD's items
    assert memory.ease_job_mb(20_108, 10_000_000) == 8000  # ML-20M: the floor
    assert memory.ease_job_mb(1682, 100_000) == 8000
    # baselines' own threshold (which tests and benchmarks move) reaches the estimate
    monkeypatch.setattr(baselines, "FLOAT64_MAX_ITEMS", 0)
    assert baselines.ease_fit_bytes(40, 60) == memory.ease_fit_bytes(40, 60, 0)
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda: 3 * 2**30)
    assert runtime.memory_budget(8000) == 3 * 2**30  # less free than asked for
    assert runtime.memory_budget(2000) == 2000 * 2**20
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda: None)  # not Linux
    assert runtime.memory_budget(2000) == 2000 * 2**20


def test_ease_larger_than_its_memory_budget_is_a_model_failure(tmp_path):
    from ract.checkpoint import save_failure
    from ract.load import load_model
    from ract.errors import ModelFailure

    data = taste_split()  # 40 items, 60 validation users
    need = baselines.ease_fit_bytes(40, 60)
    with pytest.raises(
        ModelFailure,
        match=r"EASE on 40 items needs about 0\.0 GiB, more than "
        r"its budget",
    ):
        select_ease_lambda(data, lambdas=(10,), max_bytes=need - 1)
    best, _ = select_ease_lambda(data, lambdas=(10,), max_bytes=need)
    assert best.n_items == 40
    # the failure recorded in place of the checkpoint is reported when the model is loaded
    save_failure(tmp_path / "ease.pt", model="EASE", reason="too big", data_hash=data.content_hash)
    with pytest.raises(ModelFailure, match=r"ease.pt: EASE could not be fit: too big"):
        load_model(tmp_path / "ease.pt", data_hash=data.content_hash, n_items=40)


def test_ease_not_positive_definite_is_a_model_failure():
    from ract.errors import ModelFailure

    gram = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3 and -1
    with pytest.raises(ModelFailure, match="not positive definite"):
        EASE.from_gram(gram, 0.5)

"""The fast paths compute what the plain ones do: sparse batches, the sparse first layer, the
item-major weight in checkpoints, and top-k with one topk call."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ract.data.splits import dense_rows, sparse_rows
from ract.metrics import _top_k_exact, top_k_items
from ract.model import ActorConfig, MultVAE
from ract.sparse import SparseRows, _SparseLinear


def binary(b, n, p=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, generator=g) < p).float()


def test_sparse_rows_match_dense_rows():
    m = sp.random(30, 17, density=0.3, format="csr", random_state=1, dtype=np.float32)
    rows = np.array([0, 3, 4, 20, 29])
    x = sparse_rows(m, rows, "cpu")
    assert x.shape == (5, 17)
    assert torch.equal(x.dense(), dense_rows(m, rows, "cpu"))
    y = SparseRows.from_dense(dense_rows(m, rows, "cpu"))
    assert torch.equal(y.indptr, x.indptr) and torch.equal(y.indices, x.indices)
    assert torch.allclose(x.row_sum(), dense_rows(m, rows, "cpu").sum(1))


def test_entries_by_item_from_scipy_equal_a_stable_sort():
    """The weight gradient's transposed batch: scipy's counting sort (CPU) gives what torch's
    stable argsort (other devices) does, with empty rows and items never seen."""
    rng = np.random.default_rng(3)
    a = (rng.random((40, 25)) < 0.15) * rng.random((40, 25)).astype(np.float32)
    a[5], a[:, 7] = 0, 0  # a user with no items, an item no user has
    m = sp.csr_matrix(a)
    x = sparse_rows(m, np.arange(3, 37), "cpu")
    assert x.by_item is x.by_item  # made once per batch
    for got, want in zip(x.by_item, x.by_item_sorted()):
        assert got.dtype == torch.int64 and torch.equal(got, want)
    order, indptr, rows = x.by_item
    t = m[3:37].T.tocsr()
    assert torch.equal(indptr, torch.from_numpy(t.indptr.astype(np.int64)))
    assert torch.equal(rows, torch.from_numpy(t.indices.astype(np.int64)))
    assert torch.equal(x.values[order], torch.from_numpy(t.data))


def test_sparse_first_layer_gradients():
    x = SparseRows.from_dense(binary(6, 9, 0.4).double())
    values = x.values.clone().requires_grad_(True)
    weight_t = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: _SparseLinear.apply(v, w, x), (values, weight_t))
    assert torch.allclose(_SparseLinear.apply(values, weight_t, x), x.dense() @ weight_t)


@pytest.mark.parametrize("variational", [True, False])
def test_actor_gives_the_same_result_for_dense_and_sparse_input(variational):
    torch.manual_seed(0)
    actor = MultVAE(
        ActorConfig(n_items=40, latent_dimension=6, mlp_hidden_size=(12,), variational=variational)
    )
    x = binary(8, 40)
    x[3] = 0  # a user with no items
    for training in (False, True):
        actor.train(training)
        a = actor(x, torch.Generator().manual_seed(1))
        b = actor(SparseRows.from_dense(x), torch.Generator().manual_seed(1))
        assert torch.equal(a.logits, b.logits)
        assert torch.equal(a.kept, b.kept) and torch.equal(a.dropped, b.dropped)
        assert torch.allclose(a.nll(x), b.nll(SparseRows.from_dense(x)))
    # the first layer is x @ W.T + b of the L2-normalised input, as nn.Linear would compute
    actor.eval()
    first = actor.encoder[0]
    h = F.linear(F.normalize(x, dim=1), first.weight, first.bias)
    assert torch.allclose(
        _SparseLinear.apply(F.normalize(x, dim=1)[x > 0], first.weight_t, SparseRows.from_dense(x))
        + first.bias,
        h,
        atol=1e-6,
    )


def test_checkpoints_keep_the_linear_layout():
    torch.manual_seed(0)
    actor = MultVAE(ActorConfig(n_items=30, latent_dimension=4, mlp_hidden_size=(8,)))
    state = actor.state_dict()
    assert state["encoder.0.weight"].shape == (8, 30) and "encoder.0.weight_t" not in state
    # a state written with a plain nn.Linear first layer (contiguous weight) loads the same
    plain = {k: v.contiguous().clone() for k, v in state.items()}
    other = MultVAE(ActorConfig(n_items=30, latent_dimension=4, mlp_hidden_size=(8,)))
    other.load_state_dict(plain)
    x = binary(5, 30)
    actor.eval(), other.eval()
    assert torch.equal(actor(x).logits, other(x).logits)
    assert other.encoder[0].weight_t.is_contiguous()


def test_top_k_fast_path_equals_exact_path_with_ties():
    g = torch.Generator().manual_seed(3)
    for n, k in ((50, 10), (50, 49), (20, 20), (300, 100)):
        scores = torch.randint(0, 6, (64, n), generator=g).float()  # many ties
        scores[torch.rand(64, n, generator=g) < 0.3] = -torch.inf
        scores[:8] = torch.randn(8, n, generator=g)  # rows without ties
        assert torch.equal(top_k_items(scores, k), _top_k_exact(scores, min(k, n)))


@pytest.mark.parametrize("exclude_is_input", [True, False])
def test_validation_reads_the_actor_input_sparse_with_the_dense_path_s_results(exclude_is_input):
    """heldout_per_user feeds the actor each batch straight from the sparse matrix and takes
    bool masks as they are: every metric and critic value equals the dense reference."""
    from ract.data.splits import EvalSplit, dense_mask
    from ract.evaluate import critic_batch, heldout_per_user, masked_scores
    from ract.metrics import ranking_metrics
    from ract.model import ActorOutput, Critic, CriticConfig

    torch.manual_seed(0)
    n_users, n_items = 37, 50
    inp = sp.csr_matrix(binary(n_users, n_items, 0.2, seed=2).numpy())
    holdout = sp.csr_matrix((binary(n_users, n_items, 0.1, seed=3).numpy() > inp.toarray()) * 1.0)
    exclude = inp if exclude_is_input else sp.csr_matrix(binary(n_users, n_items, 0.3, seed=4))
    split = EvalSplit(input=inp, holdout=holdout, exclude=exclude)
    actor = MultVAE(ActorConfig(n_items=n_items, latent_dimension=6, mlp_hidden_size=(12,)))
    critic = Critic(CriticConfig(critic_layers=(8,), metrics_k=10))
    metrics = ("ndcg@10", "recall@5", "recall@20")
    got = heldout_per_user(actor.eval(), split, critic=critic, metrics=metrics, batch_size=16)
    want = {}
    for start in range(0, n_users, 16):  # the same batches: matmuls round by batch shape
        rows = np.arange(start, min(start + 16, n_users))
        x_in = dense_rows(inp, rows, "cpu")
        held = dense_mask(holdout, rows, "cpu")
        with torch.no_grad():
            out = actor(x_in)
            scores = masked_scores(out.logits, dense_rows(exclude, rows, "cpu"))
            batch = ranking_metrics(scores, held, (5, 10, 20), ("ndcg", "recall"))
            out = ActorOutput(out.logits, out.mu, out.logvar, x_in > 0, held)
            batch.update(critic_batch(critic, out, x_in + held))
        for key, value in batch.items():
            want[key] = torch.cat([want[key], value]) if key in want else value
    for key, value in got.items():
        assert torch.equal(value.nan_to_num(-1.0), want[key].nan_to_num(-1.0)), key
    broken = torch.zeros(2, n_items)
    broken[1, 3] = torch.nan
    with pytest.raises(Exception, match="NaN scores"):
        masked_scores(broken, torch.zeros(2, n_items, dtype=torch.bool))

"""Actor and critic: shapes, the critic's target and where gradients flow."""

import math

import numpy as np
import pytest
import torch

from ract.errors import RactError
from ract.model import ActorConfig, Critic, CriticConfig, MultVAE, critic_features, critic_target


def rows(n_users=8, n_items=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_users, n_items, generator=g) < 0.3).float()
    x[:, 0] = 1.0  # nobody is empty
    return x


def reference_ndcg(scores, kept, dropped, k):
    """One user at a time in numpy: rank non-kept items, relevance = dropped."""
    out = []
    for s, kp, dr in zip(scores.numpy(), kept.numpy(), dropped.numpy()):
        cand = [i for i in np.argsort(-s, kind="stable") if not kp[i]][:k]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(cand) if dr[i])
        n = int(dr.sum())
        idcg = sum(1 / math.log2(r + 2) for r in range(min(n, k)))
        out.append(dcg / idcg if n else math.nan)
    return np.array(out)


def test_actor_shapes_and_eval_is_deterministic():
    x = rows()
    actor = MultVAE(ActorConfig(n_items=30, latent_dimension=4, mlp_hidden_size=(12,)))
    actor.train()
    out = actor(x, torch.Generator().manual_seed(1))
    assert out.logits.shape == (8, 30) and out.mu.shape == (8, 4) and out.logvar.shape == (8, 4)
    assert torch.equal(out.kept | out.dropped, x > 0)
    assert not (out.kept & out.dropped).any()
    actor.eval()
    assert torch.equal(actor(x).logits, actor(x).logits)
    assert torch.equal(actor(x).kept, x > 0)


def test_dropout_keeps_about_half():
    x = torch.ones(200, 100)
    actor = MultVAE(ActorConfig(n_items=100, latent_dimension=4, mlp_hidden_size=(8,)))
    actor.train()
    out = actor(x, torch.Generator().manual_seed(0))
    assert out.kept.float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_critic_target_matches_independent_ndcg():
    x = rows(n_users=16, n_items=40)
    actor = MultVAE(ActorConfig(n_items=40, latent_dimension=4, mlp_hidden_size=(12,)))
    actor.train()
    out = actor(x, torch.Generator().manual_seed(3))
    for k in (5, 100):
        got = critic_target(out, k).numpy()
        want = reference_ndcg(out.logits.detach(), out.kept, out.dropped, k)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_critic_target_is_binary_relevance_not_recbole_normalised():
    # one user, items 0..3 present; kept = {0}, dropped = {1, 2, 3}; the actor ranks 1, 2, 3
    # first, so NDCG is exactly 1 (RecBole's normalised relevance would give 1/sqrt(4)).
    from ract.model import ActorOutput

    logits = torch.tensor([[9.0, 8.0, 7.0, 6.0, 0.0, 0.0]])
    kept = torch.tensor([[True, False, False, False, False, False]])
    dropped = torch.tensor([[False, True, True, True, False, False]])
    out = ActorOutput(logits, torch.zeros(1, 2), torch.zeros(1, 2), kept, dropped)
    assert critic_target(out, 100).item() == pytest.approx(1.0)


def test_gradient_reaches_actor_only_through_nll():
    x = rows()
    actor = MultVAE(ActorConfig(n_items=30, latent_dimension=4, mlp_hidden_size=(12,)))
    actor.train()
    out = actor(x, torch.Generator().manual_seed(0))
    feats = critic_features(out, x)
    assert feats.shape == (8, 3)
    assert torch.equal(feats[:, 0], out.kept.sum(1).float())
    assert torch.equal(feats[:, 1], out.dropped.sum(1).float())
    # the counts have no path back to the actor's parameters; the NLL does
    params = list(actor.parameters())
    for col in (0, 1):
        grads = torch.autograd.grad(
            feats[:, col].sum(), params, allow_unused=True, retain_graph=True
        )
        assert all(g is None or not g.any() for g in grads)
    grads = torch.autograd.grad(feats[:, 2].sum(), params, allow_unused=True, retain_graph=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # and through the critic: the actor's gradient equals d critic / d NLL times d NLL / d theta
    critic = Critic(CriticConfig(critic_layers=(5,)))
    critic.eval()
    f = feats.detach().clone().requires_grad_(True)
    critic(f).sum().backward()
    assert f.grad[:, :2].abs().sum() > 0  # the critic does use the counts ...
    actor.zero_grad()
    critic(feats).sum().backward(retain_graph=True)
    direct = [p.grad.clone() for p in params]
    actor.zero_grad()
    (f.grad[:, 2].detach() * feats[:, 2]).sum().backward()  # ... but only the NLL path matters
    for a, b in zip(direct, (p.grad for p in params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("norm, scale", [("running", 100.0), ("fixed", 1.0)])
def test_critic_output_in_unit_interval_and_bn_has_no_affine(norm, scale):
    # (fixed statistics pass features through unscaled, so large ones saturate the sigmoid)
    critic = Critic(CriticConfig(input_norm=norm))
    assert not any("norm" in name for name, _ in critic.named_parameters())
    critic.train()
    assert critic.norm.training == (norm == "running")
    out = critic(torch.randn(32, 3) * scale)
    assert out.shape == (32,) and ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize(
    "kwargs,setting",
    [
        (dict(dropout_prob=1.0), "dropout_prob"),
        (dict(dropout_prob=-0.1), "dropout_prob"),
        (dict(latent_dimension=0), "latent_dimension"),
        (dict(mlp_hidden_size=(0,)), "mlp_hidden_size"),
        (dict(total_anneal_steps=0), "total_anneal_steps"),
    ],
)
def test_actor_config_rejects_impossible_settings(kwargs, setting):
    with pytest.raises(RactError, match=setting):
        ActorConfig(n_items=10, **kwargs)


def test_critic_config_rejects_k_below_one():
    with pytest.raises(RactError, match="metrics_k"):
        CriticConfig(metrics_k=0)


def test_beta_anneals_and_caps():
    cfg = ActorConfig(n_items=5, anneal_cap=0.2, total_anneal_steps=100)
    assert cfg.beta(0) == 0 and cfg.beta(10) == pytest.approx(0.1) and cfg.beta(1000) == 0.2


def test_mult_dae_is_deterministic_code_without_kl():
    x = rows()
    dae = MultVAE(
        ActorConfig(n_items=30, latent_dimension=6, mlp_hidden_size=(), variational=False)
    )
    assert [tuple(layer.weight.shape) for layer in (*dae.encoder, *dae.decoder)] == [
        (6, 30),
        (30, 6),
    ]
    dae.train()
    out = dae(x, torch.Generator().manual_seed(0))
    assert out.logits.shape == (8, 30) and torch.equal(out.kl(), torch.zeros(8))
    assert (out.mu.abs() <= 1).all()  # the tanh code
    dae.eval()
    torch.testing.assert_close(dae(x).logits, dae(x).logits)

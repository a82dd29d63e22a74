"""RaCT as a controlled experiment: the likelihood control arm sees RaCT's finetune draws, the
schedules that scale with the data, the critic as RaCT_CF runs it."""

import copy
import math

import pandas as pd
import pytest
import torch

from ract.checkpoint import load_checkpoint
from ract.errors import RactError
from ract import train
from ract.model import ActorConfig, CriticConfig, MultVAE
from ract.train import ANNEAL_FRACTION, auto_anneal_steps, stage_defaults, train_stage

BATCH = 64


def per_epoch(split):
    return math.ceil(split.train.shape[0] / BATCH)


def actor_cfg(split, **kw):
    return ActorConfig(n_items=split.n_items, latent_dimension=8, mlp_hidden_size=(32,), **kw)


def stage(split, out, name, start=None, actor=None, critic=None, **settings):
    settings = {"batch_size": BATCH, "seed": 3, **settings}
    summary = train_stage(
        split,
        stage_defaults(name, **settings),
        out_checkpoint=out / f"{name}.pt",
        history_path=out / f"{name}.csv",
        actor_cfg=actor,
        critic_cfg=critic,
        pre_model_path=start,
    )
    return summary, pd.read_csv(out / f"{name}.csv"), load_checkpoint(out / f"{name}.pt")


@pytest.fixture(scope="module")
def pretrained(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    stage(split, out, "actor_pretrain", actor=actor_cfg(split), epochs=8, learning_rate=3e-3)
    stage(
        split,
        out,
        "critic_pretrain",
        start=out / "actor_pretrain.pt",
        epochs=6,
        min_steps=0,
        critic=CriticConfig(critic_layers=(16, 8), metrics_k=10),
    )
    return out


def record_training_draws(monkeypatch):
    """Every training-mode forward pass of an actor: its batch (sparse structure) and the
    state of the generator its dropout mask and noise come from."""
    calls, forward = [], MultVAE.forward

    def spy(self, x, generator=None):
        if self.training:
            calls.append((x.indptr.clone(), x.indices.clone(), generator.get_state().clone()))
        return forward(self, x, generator)

    monkeypatch.setattr(MultVAE, "forward", spy)
    return calls


def test_control_sees_exactly_racts_batches_masks_and_noise(
    pretrained, split, tmp_path, monkeypatch
):
    ract_draws = record_training_draws(monkeypatch)
    _, ract_hist, ract = stage(
        split, tmp_path / "r", "finetune", start=pretrained / "critic_pretrain.pt", epochs=3
    )
    monkeypatch.undo()
    control_draws = record_training_draws(monkeypatch)
    _, hist, control = stage(
        split,
        tmp_path / "c",
        "finetune",
        start=pretrained / "actor_pretrain.pt",
        epochs=3,
        objective="likelihood",
    )
    assert len(ract_draws) == len(control_draws) == 3 * per_epoch(split)
    for (a_ptr, a_idx, a_gen), (b_ptr, b_idx, b_gen) in zip(ract_draws, control_draws):
        assert torch.equal(a_ptr, b_ptr) and torch.equal(a_idx, b_idx)  # the same users
        assert torch.equal(a_gen, b_gen)  # the same mask and eps
    # the control steps on NLL + beta KL with beta held where pretraining left it
    start = load_checkpoint(pretrained / "actor_pretrain.pt")
    beta = ActorConfig(**start["actor_args"]).beta(start["updates"])
    assert hist["beta"].iloc[1:].tolist() == pytest.approx([beta] * 3)
    assert hist["kl"].iloc[1:].notna().all() and hist["critic_mse"].isna().all()
    assert control["critic_state"] is None
    assert ract_hist["critic_mse"].iloc[1:].notna().all()


def test_each_stage_draws_its_own_stream(pretrained, split, tmp_path, monkeypatch):
    draws = record_training_draws(monkeypatch)
    stage(
        split,
        tmp_path,
        "critic_pretrain",
        start=pretrained / "actor_pretrain.pt",
        epochs=1,
        min_steps=0,
        critic=CriticConfig(critic_layers=(4,), metrics_k=10),
    )
    critic_first = draws[0][2]
    draws.clear()
    stage(split, tmp_path, "finetune", start=pretrained / "critic_pretrain.pt", epochs=1)
    assert not torch.equal(critic_first, draws[0][2])


def test_auto_anneal_reaches_the_cap_at_vae_cfs_fraction(split, tmp_path):
    epochs = 20
    updates = epochs * per_epoch(split)
    _, hist, ckpt = stage(
        split,
        tmp_path,
        "actor_pretrain",
        epochs=epochs,
        actor=actor_cfg(split, total_anneal_steps="auto", anneal_cap=0.2),
    )
    steps = ckpt["actor_args"]["total_anneal_steps"]
    assert steps == auto_anneal_steps(0.2, updates)
    first_capped = next(
        u
        for u in range(updates + 1)
        if ActorConfig(n_items=1, total_anneal_steps=steps).beta(u) >= 0.2
    )
    assert abs(first_capped / updates - ANNEAL_FRACTION) <= 1.5 / updates
    assert hist["beta"].iloc[-1] == pytest.approx(0.2)
    assert hist["beta"].iloc[1] < 0.2 * per_epoch(split) / first_capped + 1e-9
    # a number is taken literally
    _, _, literal = stage(
        split, tmp_path, "actor_pretrain", epochs=1, actor=actor_cfg(split, total_anneal_steps=777)
    )
    assert literal["actor_args"]["total_anneal_steps"] == 777


def test_finetune_runs_min_steps(pretrained, split, tmp_path):
    summary, hist, _ = stage(
        split,
        tmp_path,
        "finetune",
        start=pretrained / "critic_pretrain.pt",
        epochs=1,
        min_steps=2 * per_epoch(split) + 1,
    )
    assert summary["steps"] == 3 * per_epoch(split) and len(hist) == 4


def test_critic_validates_every_n_updates(pretrained, split, tmp_path):
    every = 2 * per_epoch(split)
    _, hist, _ = stage(
        split,
        tmp_path,
        "critic_pretrain",
        start=pretrained / "actor_pretrain.pt",
        epochs=5,
        min_steps=0,
        validate_every=every,
        critic=CriticConfig(critic_layers=(4,), metrics_k=10),
    )
    validated = hist.loc[hist["val_critic_r"].notna(), "epoch"].tolist()
    assert validated == [0, 2, 4, 5]  # the first, every 2 epochs' updates, the last
    assert hist["critic_mse"].iloc[1:].notna().all()  # every epoch still trains


def test_critic_keep_best_r(pretrained, split, tmp_path):
    _, hist, ckpt = stage(
        split,
        tmp_path,
        "critic_pretrain",
        start=pretrained / "actor_pretrain.pt",
        epochs=6,
        min_steps=0,
        validate_every=0,
        critic_keep="best_r",
        learning_rate=3e-3,
        critic=CriticConfig(critic_layers=(8,), metrics_k=10),
    )
    trained = hist[hist["epoch"] > 0]  # an untrained critic is never kept
    assert ckpt["epoch"] == trained.loc[trained["val_critic_r"].idxmax(), "epoch"]
    assert ckpt["metrics"]["val_critic_r"] == pytest.approx(trained["val_critic_r"].max())


@pytest.mark.parametrize("norm", ["fixed", "running"])
def test_critic_norm_statistics(pretrained, split, tmp_path, norm):
    critic = CriticConfig(critic_layers=(8,), metrics_k=10, input_norm=norm)
    stage(
        split,
        tmp_path,
        "critic_pretrain",
        start=pretrained / "actor_pretrain.pt",
        epochs=2,
        min_steps=0,
        critic=critic,
    )
    stage(split, tmp_path, "finetune", start=tmp_path / "critic_pretrain.pt", epochs=2)
    for name in ("critic_pretrain", "finetune"):
        state = load_checkpoint(tmp_path / f"{name}.pt")["critic_state"]
        moved = int(state["norm.num_batches_tracked"]) > 0
        if norm == "fixed":  # RaCT_CF: initial statistics, never updated
            assert not moved
            assert torch.equal(state["norm.running_mean"], torch.zeros(3))
            assert torch.equal(state["norm.running_var"], torch.ones(3))
        else:
            assert moved and not torch.equal(state["norm.running_mean"], torch.zeros(3))


def test_critic_optimizer_carried_into_finetune(pretrained, split, tmp_path, monkeypatch):
    crit = load_checkpoint(pretrained / "critic_pretrain.pt")
    steps = int(pd.read_csv(pretrained / "critic_pretrain.csv")["steps"].iloc[-1])
    saved = crit["critic_opt_state"]
    assert all(int(s["step"]) == steps for s in saved["state"].values())
    seen, carry = [], train._Run.carry_critic_optimizer

    def spy(self, state):
        carried = carry(self, state)
        seen.append((carried, copy.deepcopy(self.critic_opt.state_dict())))
        return carried

    monkeypatch.setattr(train._Run, "carry_critic_optimizer", spy)
    stage(
        split,
        tmp_path,
        "finetune",
        start=pretrained / "critic_pretrain.pt",
        epochs=1,
        critic_learning_rate=5e-5,
    )
    ((carried, live),) = seen
    assert carried
    assert [int(s["step"]) for s in live["state"].values()] == [steps] * len(saved["state"])
    for k, s in live["state"].items():
        assert torch.equal(s["exp_avg"], saved["state"][k]["exp_avg"])
    assert live["param_groups"][0]["lr"] == 5e-5  # finetune's rate, not the critic stage's
    seen.clear()
    stage(
        split,
        tmp_path,
        "finetune",
        start=pretrained / "critic_pretrain.pt",
        epochs=1,
        carry_critic_optimizer=False,
    )
    assert not seen  # a fresh Adam


def test_likelihood_objective_only_in_finetune():
    with pytest.raises(RactError, match="setting objective: expected critic outside finetune"):
        stage_defaults("critic_pretrain", objective="likelihood")
    with pytest.raises(RactError, match="setting critic_keep: expected one of last, best_r"):
        stage_defaults("critic_pretrain", critic_keep="best")

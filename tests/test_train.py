"""The three stages on small synthetic data: outputs, selection, determinism, refusals."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from ract.checkpoint import build_actor, build_critic, load_checkpoint
from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.splits import load_split
from ract.errors import RactError
from ract.model import ActorConfig, CriticConfig
from ract.train import HISTORY_COLUMNS, STAGES, stage_defaults, train_stage

from conftest import make_interactions


def small_actor(n_items):
    return ActorConfig(n_items=n_items, latent_dimension=8, mlp_hidden_size=(32,))


def run_all(split, out, seed=0, freeze=False, precision="fp32", device="cpu"):
    paths = {
        s: (out / f"{s}.pt", out / f"{s}.csv")
        for s in ("actor_pretrain", "critic_pretrain", "finetune")
    }
    summaries = {}
    summaries["actor_pretrain"] = train_stage(
        split,
        stage_defaults(
            "actor_pretrain",
            epochs=15,
            batch_size=64,
            seed=seed,
            learning_rate=3e-3,
            validate_every=0,  # every epoch: the histories are checked row by row
            precision=precision,
        ),
        out_checkpoint=paths["actor_pretrain"][0],
        history_path=paths["actor_pretrain"][1],
        actor_cfg=small_actor(split.n_items),
        device=device,
    )
    summaries["critic_pretrain"] = train_stage(
        split,
        stage_defaults(
            "critic_pretrain",
            epochs=2,
            min_steps=30,
            batch_size=64,
            seed=seed,
            validate_every=0,
            precision=precision,
        ),
        out_checkpoint=paths["critic_pretrain"][0],
        history_path=paths["critic_pretrain"][1],
        critic_cfg=CriticConfig(critic_layers=(16, 8), metrics_k=10),
        pre_model_path=paths["actor_pretrain"][0],
        device=device,
    )
    summaries["finetune"] = train_stage(
        split,
        stage_defaults(
            "finetune",
            epochs=3,
            batch_size=64,
            seed=seed,
            freeze_critic=freeze,
            precision=precision,
            validate_every=0,  # every epoch, as the stages before
        ),
        out_checkpoint=paths["finetune"][0],
        history_path=paths["finetune"][1],
        pre_model_path=paths["critic_pretrain"][0],
        device=device,
    )
    return paths, summaries


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_all(split, out)


def test_stages_write_checkpoints_and_histories(trained, split):
    paths, summaries = trained
    for stage, (ckpt, hist) in paths.items():
        state = load_checkpoint(ckpt, data_hash=split.content_hash, n_items=split.n_items)
        assert state["stage"] == stage
        history = pd.read_csv(hist)
        assert tuple(history.columns) == HISTORY_COLUMNS
        assert history["epoch"].tolist()[0] == 0  # the starting model is epoch 0
        assert history["val_ndcg@100"].notna().all()
    actor_hist = pd.read_csv(paths["actor_pretrain"][1])
    assert actor_hist["loss"].iloc[1:].notna().all() and actor_hist["beta"].iloc[1:].notna().all()
    # the actor learns something: the best epoch beats the random start
    assert summaries["actor_pretrain"]["val_ndcg@100"] > actor_hist["val_ndcg@100"].iloc[0]
    # best-checkpoint selection: the kept epoch is the argmax of validation NDCG@100
    best = int(actor_hist["val_ndcg@100"].idxmax())
    assert load_checkpoint(paths["actor_pretrain"][0])["epoch"] == actor_hist["epoch"][best]


def test_critic_stage_runs_min_steps_and_records_fit(trained, split):
    paths, summaries = trained
    hist = pd.read_csv(paths["critic_pretrain"][1])
    # 2 epochs asked, but min_steps=30 extends them to ceil(30 / batches per epoch)
    per_epoch = math.ceil(split.train.shape[0] / 64)
    assert per_epoch < 15
    assert len(hist) == 1 + math.ceil(30 / per_epoch)
    assert summaries["critic_pretrain"]["steps"] == per_epoch * math.ceil(30 / per_epoch)
    for col in (
        "critic_mse",
        "critic_r_train",
        "val_critic_mse",
        "val_critic_r",
        "val_nll_r",
        "val_nll_slope_negative",
    ):
        assert hist[col].iloc[1:].notna().all(), col
    # the actor is frozen in this stage
    a = load_checkpoint(paths["actor_pretrain"][0])["actor_state"]
    b = load_checkpoint(paths["critic_pretrain"][0])["actor_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_trains_critic_unless_frozen(trained, split, tmp_path):
    paths, _ = trained
    start = load_checkpoint(paths["critic_pretrain"][0])
    hist = pd.read_csv(paths["finetune"][1])
    assert hist["critic_mse"].iloc[1:].notna().all()
    end = load_checkpoint(paths["finetune"][0])
    if end["epoch"] > 0:
        assert any(
            not torch.equal(start["critic_state"][k], end["critic_state"][k])
            for k in start["critic_state"]
        )
    _, summaries = run_all(split, tmp_path, freeze=True)
    frozen = load_checkpoint(tmp_path / "finetune.pt")
    crit = load_checkpoint(tmp_path / "critic_pretrain.pt")
    assert all(
        torch.equal(crit["critic_state"][k], frozen["critic_state"][k])
        for k in crit["critic_state"]
    )


def test_same_seed_same_results(trained, split, tmp_path):
    paths, _ = trained
    run_all(split, tmp_path, seed=0)
    for stage, (ckpt, hist) in paths.items():
        a, b = pd.read_csv(hist), pd.read_csv(tmp_path / f"{stage}.csv")
        cols = [c for c in a.columns if "seconds" not in c]
        pd.testing.assert_frame_equal(a[cols], b[cols])
        sa, sb = (
            load_checkpoint(ckpt)["actor_state"],
            load_checkpoint(tmp_path / f"{stage}.pt")["actor_state"],
        )
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        # the same bytes too: nothing in the file depends on the run (a temporary file's name)
        assert ckpt.read_bytes() == (tmp_path / f"{stage}.pt").read_bytes(), stage


def test_bf16_trains_every_stage_close_to_fp32_with_float32_weights(trained, split, tmp_path):
    paths, _ = run_all(split, tmp_path, precision="bf16")
    for stage in STAGES:
        state = load_checkpoint(paths[stage][0])
        assert state["stage_config"]["precision"] == "bf16"
        tensors = list(state["actor_state"].values())
        assert tensors and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
        fp32, bf16 = (pd.read_csv(p[stage][1]).iloc[-1] for p in (trained[0], paths))
        # the same draws, so the two runs differ only by bfloat16 rounding in the actor
        column = "val_ndcg@100"
        assert abs(bf16[column] - fp32[column]) < 0.03, (stage, fp32[column], bf16[column])
        if stage == "actor_pretrain":
            # ... which is there: the actor's multiplies did run in bfloat16
            assert bf16["loss"] != fp32["loss"]
            assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.01)


def test_checkpoints_rebuild_models(trained):
    paths, _ = trained
    state = load_checkpoint(paths["finetune"][0])
    actor, critic = build_actor(state), build_critic(state)
    assert actor.cfg.latent_dimension == 8 and critic.cfg.critic_layers == (16, 8)


def test_save_step_writes_periodic_checkpoints(split, tmp_path):
    train_stage(
        split,
        stage_defaults("actor_pretrain", epochs=4, batch_size=64, save_step=2),
        out_checkpoint=tmp_path / "a.pt",
        history_path=tmp_path / "a.csv",
        actor_cfg=small_actor(split.n_items),
        checkpoint_dir=tmp_path / "ck",
    )
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["actor_pretrain-epoch0002.pt", "actor_pretrain-epoch0004.pt"]
    assert load_checkpoint(tmp_path / "ck" / names[1])["epoch"] == 4


def test_pre_model_path_continues_actor_and_anneal_counter(trained, split, tmp_path):
    paths, _ = trained
    start = load_checkpoint(paths["actor_pretrain"][0])
    train_stage(
        split,
        stage_defaults("actor_pretrain", epochs=1, batch_size=64),
        out_checkpoint=tmp_path / "a.pt",
        history_path=tmp_path / "a.csv",
        pre_model_path=paths["actor_pretrain"][0],
    )
    hist = pd.read_csv(tmp_path / "a.csv")
    assert hist["updates"].iloc[0] == start["updates"] > 0
    assert hist["updates"].iloc[1] == start["updates"] + math.ceil(split.train.shape[0] / 64)


def test_later_stages_need_a_starting_checkpoint(split, tmp_path, trained):
    with pytest.raises(RactError, match="pre_model_path"):
        train_stage(
            split,
            stage_defaults("critic_pretrain"),
            out_checkpoint=tmp_path / "c.pt",
            history_path=tmp_path / "c.csv",
        )
    with pytest.raises(RactError, match="has no critic"):
        train_stage(
            split,
            stage_defaults("finetune"),
            out_checkpoint=tmp_path / "f.pt",
            history_path=tmp_path / "f.csv",
            pre_model_path=trained[0]["actor_pretrain"][0],
        )
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_from_other_data_refused(trained, tmp_path):
    other = tmp_path / "other"
    prepare_split(make_interactions(n_items=50, seed=5), PrepareConfig(), other)
    data = load_split(other)
    with pytest.raises(RactError, match="belongs to another data set"):
        train_stage(
            data,
            stage_defaults("critic_pretrain"),
            out_checkpoint=tmp_path / "c.pt",
            history_path=tmp_path / "c.csv",
            pre_model_path=trained[0]["actor_pretrain"][0],
        )
    with pytest.raises(RactError, match="hash"):
        load_checkpoint(trained[0]["actor_pretrain"][0], data_hash="0" * 64)


class Evil:
    """Stands for any pickled object a shared checkpoint could smuggle in."""


def test_pickled_object_checkpoint_refused(tmp_path):
    torch.save({"format_version": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(RactError, match="not a loadable ract checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RactError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(RactError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "kwargs,setting",
    [
        (dict(epochs=-1), "epochs"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(save_step=-2), "save_step"),
        (dict(precision="fp16"), "precision"),
    ],
)
def test_impossible_stage_settings_rejected(kwargs, setting):
    with pytest.raises(RactError, match=f"setting {setting}"):
        stage_defaults("actor_pretrain", **kwargs)
    with pytest.raises(RactError, match="train_stage"):
        stage_defaults("pretrain")


def test_mult_dae_trains_with_l2_penalty(split, tmp_path):
    dae = ActorConfig(
        n_items=split.n_items, latent_dimension=16, mlp_hidden_size=(), variational=False
    )
    losses = {}
    for lam in (0.0, 1e-2):
        train_stage(
            split,
            stage_defaults("actor_pretrain", epochs=3, batch_size=64, l2_penalty=lam),
            out_checkpoint=tmp_path / f"d{lam}.pt",
            history_path=tmp_path / f"d{lam}.csv",
            actor_cfg=dae,
        )
        hist = pd.read_csv(tmp_path / f"d{lam}.csv")
        assert (hist["kl"].iloc[1:] == 0).all()
        losses[lam] = hist["loss"].iloc[1] - hist["nll"].iloc[1]
    assert losses[0.0] == 0 and losses[1e-2] > 0  # the penalty is part of the loss
    assert not load_checkpoint(tmp_path / "d0.0.pt")["actor_args"]["variational"]


def test_critic_fit_frame_has_one_row_per_validation_user(trained, split):
    # validate() reads the same per-user evaluation (evaluate.heldout_per_user), so its r is
    # the r of these columns by construction; this checks the table itself
    from ract.evaluate import critic_fit_frame

    paths, _ = trained
    state = load_checkpoint(paths["critic_pretrain"][0])
    actor, critic = build_actor(state), build_critic(state)
    frame = critic_fit_frame(actor, critic, split, "validation")
    assert len(frame) == split.validation.input.shape[0]
    assert list(frame.columns) == [
        "user",
        "n_input",
        "n_holdout",
        "ndcg@10",
        "critic",
        "nll",
        "slope",
    ]
    assert frame["ndcg@10"].isna().equals(frame["n_holdout"] == 0)
    assert frame["ndcg@10"].dropna().between(0, 1).all() and frame["critic"].between(0, 1).all()


def test_non_finite_loss_is_a_model_failure(split, tmp_path):
    from ract.errors import ModelFailure

    cfg = stage_defaults("actor_pretrain", epochs=2, batch_size=64, learning_rate=1e30)
    with pytest.raises(ModelFailure, match=r"actor loss became (nan|inf) at epoch \d+, batch \d+"):
        train_stage(
            split,
            cfg,
            out_checkpoint=tmp_path / "a.pt",
            history_path=tmp_path / "a.csv",
            actor_cfg=small_actor(split.n_items),
        )
    assert not (tmp_path / "a.pt").exists()


# ----------------------------------------------------------------------------------------------
# Minibatches: any batch size, no batch of one user (batch norm cannot normalise one value)


# every small case, and the sizes of ml-100k (750 training users) and ML-20M (116,677)
PAIRS = [(n, bs) for n in range(1, 70) for bs in range(1, 75)] + [
    (n, bs) for n in (501, 750, 116_677) for bs in (1, 2, 107, 500, 749, 750, 751, 2000)
]


def test_minibatches_use_every_user_once_and_never_one_alone():
    from ract.train import minibatches, n_batches

    for n, batch_size in PAIRS:
        perm = np.random.default_rng(n).permutation(n)
        batches = minibatches(perm, batch_size)
        sizes = [len(b) for b in batches]
        assert len(batches) == n_batches(n, batch_size), (n, batch_size)
        assert np.array_equal(np.concatenate(batches), perm), (n, batch_size)  # each user once
        assert n == 1 or min(sizes) >= 2, (n, batch_size, sizes)
        if batch_size > 1 and n % batch_size != 1:  # never had a one-user batch: unchanged
            assert sizes == [len(perm[i : i + batch_size]) for i in range(0, n, batch_size)]


@pytest.mark.parametrize("objective", ["critic", "likelihood"])
def test_stages_train_when_one_user_is_left_over(split, tmp_path, objective):
    n_train = split.train.shape[0]
    batch_size = n_train - 1  # two batches of n - 1 and 1 users before merging
    assert n_train % batch_size == 1
    paths = {s: (tmp_path / f"{s}.pt", tmp_path / f"{s}.csv") for s in STAGES}
    settings = dict(batch_size=batch_size, seed=0)
    train_stage(
        split,
        stage_defaults("actor_pretrain", epochs=2, **settings),
        out_checkpoint=paths["actor_pretrain"][0],
        history_path=paths["actor_pretrain"][1],
        actor_cfg=small_actor(split.n_items),
    )
    train_stage(
        split,
        stage_defaults("critic_pretrain", epochs=2, min_steps=0, **settings),
        out_checkpoint=paths["critic_pretrain"][0],
        history_path=paths["critic_pretrain"][1],
        critic_cfg=CriticConfig(critic_layers=(8,), metrics_k=10, input_norm="running"),
        pre_model_path=paths["actor_pretrain"][0],
    )
    summary = train_stage(
        split,
        stage_defaults("finetune", epochs=2, objective=objective, **settings),
        out_checkpoint=paths["finetune"][0],
        history_path=paths["finetune"][1],
        pre_model_path=paths["critic_pretrain"][0],
    )
    assert summary["steps"] == 2  # one merged batch per epoch
    history = pd.read_csv(paths["critic_pretrain"][1])
    assert history["steps"].tolist() == [0, 1, 2]


def test_split_without_evaluable_validation_users_refused(split, tmp_path):
    """A split written before `prepare` refused these (no validation user has a held-out
    item): training would select on NaN and keep the untrained model."""
    old = tmp_path / "old"
    shutil.copytree(split.path, old)
    holdout = sp.load_npz(old / "validation_holdout.npz")
    sp.save_npz(old / "validation_holdout.npz", sp.csr_matrix(holdout.shape, dtype=np.float32))
    with pytest.raises(RactError, match=r"no validation user has a held-out item"):
        train_stage(
            load_split(old),
            stage_defaults("actor_pretrain", epochs=1),
            out_checkpoint=tmp_path / "a.pt",
            history_path=tmp_path / "a.csv",
            actor_cfg=small_actor(split.n_items),
        )
    assert not (tmp_path / "a.pt").exists()


def test_running_critic_norm_on_one_training_user_refused(tmp_path):
    frame = pd.DataFrame(
        {"user": np.repeat([1, 2, 3], 10), "item": np.tile(range(10), 3), "rating": 5.0}
    )  # everyone has every item
    prepare_split(frame, PrepareConfig(heldout_users=1), tmp_path / "s")
    one = load_split(tmp_path / "s")
    assert one.train.shape[0] == 1
    settings = dict(out_checkpoint=tmp_path / "x.pt", history_path=tmp_path / "x.csv")
    train_stage(
        one,
        stage_defaults("actor_pretrain", epochs=1),
        **settings,
        actor_cfg=small_actor(one.n_items),
    )
    with pytest.raises(RactError, match="critic.input_norm: running .* one training user"):
        train_stage(
            one,
            stage_defaults("critic_pretrain", epochs=1, min_steps=0),
            out_checkpoint=tmp_path / "c.pt",
            history_path=tmp_path / "c.csv",
            critic_cfg=CriticConfig(critic_layers=(4,), input_norm="running"),
            pre_model_path=tmp_path / "x.pt",
        )


def test_eval_batches_share_input_and_exclude_when_they_are_one_matrix(split, tmp_path):
    """Held-out and excluded items come as bool masks (a quarter of float32's memory), the
    input's exclusion as the input itself."""
    from ract.evaluate import eval_batches

    for rows, x_in, holdout, exclude in eval_batches(split.validation, 10, "cpu"):
        assert exclude is x_in  # strong protocol: the fold-in is what is excluded
        assert torch.equal(holdout, torch.from_numpy(split.validation.holdout[rows].toarray() > 0))
    prepare_split(make_interactions(), PrepareConfig(protocol="weak"), tmp_path / "weak")
    weak = load_split(tmp_path / "weak").test  # excludes training and validation items
    for rows, x_in, holdout, exclude in eval_batches(weak, 10, "cpu"):
        assert exclude is not x_in
        assert torch.equal(exclude, torch.from_numpy(weak.exclude[rows].toarray()))


def test_validation_batches_are_sliced_once_per_split(split, monkeypatch):
    """A stage validates the same users every few updates: their batches are made at the
    first validation, kept by the split, and hold its matrices' rows; a large split's are
    made as they are read."""
    from ract.data import splits
    from ract.data.splits import sparse_rows

    v = split.validation
    batches = v.sparse_batches(10, "cpu")
    assert v.sparse_batches(10, "cpu") is batches
    assert v.sparse_batches(7, "cpu") is not batches
    assert np.array_equal(np.concatenate([b[0] for b in batches]), np.arange(v.input.shape[0]))
    for rows, x, held, exclude in batches:
        assert exclude is x  # strong protocol: the fold-in is what is excluded
        assert torch.equal(x.dense(), sparse_rows(v.input, rows, "cpu").dense())
        assert torch.equal(held.mask(), torch.from_numpy(v.holdout[rows].toarray() > 0))
    kept = v.sparse_batches(7, "cpu")
    monkeypatch.setattr(splits, "KEEP_MAX_ENTRIES", v.input.nnz + v.holdout.nnz - 1)
    made = v.sparse_batches(7, "cpu")
    assert not isinstance(made, list)
    for (rows, x, held, exclude), (rows_k, x_k, held_k, _) in zip(made, kept, strict=True):
        assert np.array_equal(rows, rows_k) and exclude is x
        assert torch.equal(x.dense(), x_k.dense()) and torch.equal(held.mask(), held_k.mask())


@pytest.mark.parametrize("block, trims", [(1 << 40, 0), (1, 4)])
def test_validation_returns_free_heap_pages_only_for_large_blocks(
    split, tmp_path, monkeypatch, block, trims
):
    """The trim around each validation matters where a batch's (B, n_items) blocks are tens
    of MB; on small data it would cost more than the memory it gives back."""
    import ract.train

    calls = []
    monkeypatch.setattr(ract.train, "TRIM_MIN_BLOCK", block)
    monkeypatch.setattr(ract.train, "release_freed_memory", lambda: calls.append(1))
    train_stage(
        split,
        stage_defaults("actor_pretrain", epochs=1, batch_size=64),
        out_checkpoint=tmp_path / "a.pt",
        history_path=tmp_path / "a.csv",
        actor_cfg=small_actor(split.n_items),
    )
    assert len(calls) == trims  # before and after the validations of epochs 0 and 1


@pytest.mark.parametrize("batch_size, rows", [(64, 100), (500, 500), (5000, 1000)])
def test_training_validates_in_batches_of_its_own_size(
    split, tmp_path, monkeypatch, batch_size, rows
):
    """Validation batches as large as the training batches (at least 100 users, at most
    EVAL_BATCH_SIZE), so that their (B, n_items) tensors reuse the memory training frees."""
    import ract.train

    seen = []
    validate = ract.train.validate
    monkeypatch.setattr(
        ract.train,
        "validate",
        lambda *args, batch_size, **kw: seen.append(batch_size) or validate(*args, **kw),
    )
    train_stage(
        split,
        stage_defaults("actor_pretrain", epochs=1, batch_size=batch_size),
        out_checkpoint=tmp_path / "a.pt",
        history_path=tmp_path / "a.csv",
        actor_cfg=small_actor(split.n_items),
    )
    assert seen == [rows, rows]  # epoch 0 and epoch 1


def test_release_freed_memory_returns_free_heap_pages(tmp_path):
    """Under reuse_freed_memory freed blocks stay resident until release_freed_memory, which
    training calls around each validation. In a child process: the setting is process-wide."""
    import subprocess
    import sys

    code = """
import numpy as np
from ract.runtime import release_freed_memory, reuse_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

reuse_freed_memory()
keep, blocks = [], []
for _ in range(8):  # 8 x 32 MiB, each followed by a small block that stays
    blocks.append(np.ones(2**25, dtype=np.uint8))
    keep.append(np.ones(2**12, dtype=np.uint8))
blocks.clear()
before = rss()
release_freed_memory()
print(before - rss())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 200 * 2**20

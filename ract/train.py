"""The three RaCT training stages (SPEC 4), each with its own optimizer and learning rate.

- actor_pretrain: Mult-VAE on NLL + beta * KL, beta annealed over optimizer steps.
- critic_pretrain: actor frozen (still sampling a dropout mask and z every step); the critic
  learns to predict the NDCG@k of the dropped items from (kept, dropped, NLL).
- finetune: per minibatch one actor step on -mean(critic) and, unless frozen, one critic step
  on its MSE for the same batch (the original code keeps training the critic; RecBole freezes).

Every stage validates (every epoch, or every `validate_every` updates), writes a per-epoch
history, and keeps the checkpoint with the best validation NDCG@100 (the starting model is epoch
0). The critic stage keeps its last epoch, or with `critic_keep="best_r"` the epoch whose critic
fits validation users best, and records the critic's fit, so a user can see whether it is usable
before finetuning.

finetune with `objective="likelihood"` is the control arm: the same schedule, optimizer,
batches, dropout masks and noise as RaCT's finetune, with the actor's own loss (NLL + beta KL at
the beta reached in pretraining) in place of -critic. RaCT minus this control is what the critic
contributes, apart from simply training the actor longer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import build_actor, build_critic, load_checkpoint, model_states, save_checkpoint
from .correlation import pearson
from .data.splits import SplitData, sparse_rows
from .errors import ModelFailure, RactError, check_settings
from .evaluate import EVAL_BATCH_SIZE, heldout_per_user
from .formats import STAGES
from .io import config_dict, write_csv
from .model import ActorConfig, Critic, CriticConfig, MultVAE, critic_features, critic_target
from .optim import Adam
from .progress import Progress
from .resume import DEFAULT_EVERY, ResumePoint, StopAndResume, cpu_copy, fingerprint, sigterm_flag
from .runtime import release_freed_memory, resolve_device, reuse_freed_memory

log = logging.getLogger("ract.train")

OBJECTIVES = ("critic", "likelihood")  # finetune: RaCT, or the likelihood control arm
CRITIC_KEEP = ("last", "best_r")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast for the actor's matrix multiplies in training
# Training-loss columns each kind of step averages over its batches (`loss` is what the actor's
# optimizer minimises: NLL + beta KL, or -critic for RaCT's finetune; the critic's is
# `critic_mse`).
STEP_COLUMNS = {
    "likelihood": ("loss", "nll", "kl"),
    "critic_pretrain": ("nll", "critic_mse"),
    "finetune": ("loss", "nll", "critic_mse"),
}
HISTORY_COLUMNS = (
    "stage",
    "epoch",
    "steps",
    "updates",
    "loss",
    "nll",
    "kl",
    "beta",
    "critic_mse",
    "critic_r_train",
    "val_ndcg@100",
    "val_recall@20",
    "val_recall@50",
    "val_critic_mse",
    "val_critic_r",
    "val_nll_r",
    "val_nll_slope_negative",
    "kept",
    "train_seconds",
    "seconds",
)
SELECT_METRIC = "val_ndcg@100"
# Fewest users a validation batch holds, however small the training batches (_Run.validate).
VALIDATION_MIN_ROWS = 100
# bytes of a float32 (validation batch, n_items) block from which validation gives the kernel
# back the heap's free pages before and after (ML-20M: 40 MB; ml-100k: 3.4 MB, not trimmed)
TRIM_MIN_BLOCK = 16 << 20


@dataclass(frozen=True)
class StageConfig:
    """Settings of one training stage. `epochs` is RecBole's `pretrain_epochs` for the two
    pretraining stages. Use `stage_defaults(train_stage)` for the paper's values."""

    train_stage: str
    epochs: int
    learning_rate: float
    batch_size: int = 500
    weight_decay: float = 0.0  # Adam's L2 on the trained network (vae_cf trains Mult-VAE with 0)
    # actor_pretrain: lam * (sum of squared weights) added to the loss of every batch, as in
    # vae_cf (Mult-DAE: lam = 0.01 / batch size = 2e-5 for batches of 500).
    l2_penalty: float = 0.0
    # Run at least this many optimizer steps, extending `epochs` if needed. The paper's epochs
    # are counted on ML-20M (234 batches each): 50 critic epochs are ~11,700 steps there but
    # 100 on ml-100k, too few to fit (SPEC 3); finetune's 50 likewise.
    min_steps: int = 0
    # Validate after an epoch only once this many optimizer steps have passed since the last
    # validation (0: every epoch); the first and last epochs are always validated. A critic
    # stage of 2,000 one-batch epochs then costs 2,000 updates, not 2,000 validations.
    validate_every: int = 0
    critic_learning_rate: float = 1e-4  # finetune: the critic's own steps
    freeze_critic: bool = False  # finetune: True = RecBole's behaviour, False = the original
    # finetune: carry the critic's Adam state over from critic_pretrain (RaCT_CF keeps one
    # optimizer for the critic throughout); False starts a fresh Adam.
    carry_critic_optimizer: bool = True
    objective: str = "critic"  # finetune: "critic" (RaCT) or "likelihood" (the control arm)
    critic_keep: str = "last"  # critic_pretrain: the "last" epoch or the "best_r" on validation
    save_step: int = 0  # write a checkpoint every N epochs (0: never)
    seed: int = 98765
    # "bf16": the actor's matrix multiplies in training run in bfloat16 (autocast); its outputs
    # return to float32, so softmax, losses, the critic, the weights and Adam's state stay
    # float32, and validation and evaluation run wholly in float32.
    precision: str = "fp32"

    def __post_init__(self):
        check_settings(
            self,
            [
                (self.train_stage in STAGES, "train_stage", f"one of {', '.join(STAGES)}"),
                (self.epochs >= 0, "epochs", "an integer >= 0"),
                (self.learning_rate > 0, "learning_rate", "a number > 0"),
                (self.batch_size >= 1, "batch_size", "an integer >= 1"),
                (self.weight_decay >= 0, "weight_decay", "a number >= 0"),
                (self.l2_penalty >= 0, "l2_penalty", "a number >= 0"),
                (self.min_steps >= 0, "min_steps", "an integer >= 0"),
                (
                    self.validate_every >= 0,
                    "validate_every",
                    "an integer >= 0 (0: validate every epoch)",
                ),
                (self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}"),
                (
                    self.objective == "critic" or self.train_stage == "finetune",
                    "objective",
                    "critic outside finetune (the likelihood control arm is a finetune)",
                ),
                (
                    self.critic_keep in CRITIC_KEEP,
                    "critic_keep",
                    f"one of {', '.join(CRITIC_KEEP)}",
                ),
                (self.critic_learning_rate > 0, "critic_learning_rate", "a number > 0"),
                (self.save_step >= 0, "save_step", "an integer >= 0 (0: no periodic checkpoints)"),
                (self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}"),
            ],
        )


STAGE_DEFAULTS = {
    "actor_pretrain": dict(epochs=200, learning_rate=1e-3, validate_every=4),
    "critic_pretrain": dict(epochs=50, learning_rate=1e-4, min_steps=2000, validate_every=100),
    "finetune": dict(epochs=50, learning_rate=2e-6, validate_every=10),
}

# vae_cf on ML-20M: 116,677 training users in batches of 500 are 234 updates an epoch, 46,800
# in 200 epochs; beta = min(0.2, updates / 200,000) reaches its cap at update 40,000, 85.5% of
# the way. `total_anneal_steps="auto"` keeps that fraction on any data set.
ANNEAL_FRACTION = 40_000 / 46_800


def auto_anneal_steps(anneal_cap: float, total_updates: int) -> int:
    """total_anneal_steps with which beta reaches `anneal_cap` after ANNEAL_FRACTION of
    `total_updates` actor updates, as in vae_cf on ML-20M."""
    if anneal_cap <= 0:
        return 1  # beta is 0 throughout
    return max(1, round(ANNEAL_FRACTION * total_updates / anneal_cap))


def stream_seed(seed: int, stage: str, stream: str) -> int:
    """Seed of one random stream of one stage: each stage draws its own batches, dropout masks
    and noise (before, all three stages replayed the same stream from `seed`). The likelihood
    control is stage "finetune", so it sees exactly RaCT's finetune draws."""
    digest = hashlib.sha256(f"{seed}/{stage}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stage_defaults(train_stage: str, **overrides) -> StageConfig:
    if train_stage not in STAGES:
        raise RactError(
            f"setting train_stage: expected one of {', '.join(STAGES)}, got {train_stage!r}"
        )
    return StageConfig(train_stage=train_stage, **{**STAGE_DEFAULTS[train_stage], **overrides})


def _finite(value: torch.Tensor, what: str, epoch: int, batch: int) -> float:
    v = value.item()
    if not math.isfinite(v):
        raise ModelFailure(
            f"{what} became {v} at epoch {epoch}, batch {batch}; stopping (the "
            "last saved checkpoint is untouched). Lower the learning rate."
        )
    return v


def _critic_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over users with at least one dropped item (others have no defined NDCG target)."""
    valid = ~torch.isnan(target)
    return (pred[valid] - target[valid]).pow(2).mean() if valid.any() else pred.sum() * 0.0


def validate(
    actor: MultVAE,
    critic: Critic | None,
    data: SplitData,
    device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, float]:
    """Validation NDCG@100 / Recall@20 / Recall@50 and, with a critic, its fit to the true
    NDCG@k of held-out items given fold-in (the paper's critic-correlation measurement), from
    the same per-user evaluation as `ract.evaluate.critic_fit`."""
    metrics = ("ndcg@100", "recall@20", "recall@50")
    per_user = heldout_per_user(
        actor,
        data.validation,
        critic=critic,
        metrics=metrics,
        batch_size=batch_size,
        device=device,
    )
    row = {}
    for key in metrics:
        v = per_user[key]
        row[f"val_{key}"] = v[~torch.isnan(v)].mean().item()
    if critic is not None:
        pred, target = per_user["critic"], per_user["target"]
        row["val_critic_mse"] = _critic_mse(pred, target).item()
        row["val_critic_r"] = pearson(pred, target)
        row["val_nll_r"] = pearson(per_user["nll"], target)
        # d critic / d NLL < 0 means "lower NLL scores higher": the direction finetuning needs.
        has = ~torch.isnan(target)
        row["val_nll_slope_negative"] = (per_user["slope"][has] < 0).double().mean().item()
    return row


def _adam(params, **settings) -> Adam:
    """Adam, fused where torch has the kernel for the device (CPU from torch 2.4): one pass
    over each parameter per step instead of about ten, which on the actor's 24M parameters
    (ML-20M) cost as much as the decoder's matrix multiplies. `ract.optim.Adam` runs torch's
    fused kernel as torch.optim.Adam(fused=True) does, bit for bit, without importing
    torch._dynamo (about 1 s of each training process)."""
    return Adam(params, **settings)


@dataclass(frozen=True)
class _Outputs:
    checkpoint: Path  # the kept epoch's checkpoint
    history: Path  # the per-epoch history CSV
    checkpoint_dir: Path | None  # the `save_step` checkpoints


class _Run:
    """One stage run: its models, optimizers, counters and generators, the best model so far
    and the history. `run` is the epoch loop: train -> validate -> select -> save."""

    def __init__(self, data, cfg: StageConfig, actor, critic, device, updates: int):
        self.data, self.cfg, self.actor, self.critic, self.device = (
            data,
            cfg,
            actor,
            critic,
            device,
        )
        stage = cfg.train_stage
        actor.to(device)
        for p in actor.parameters():
            p.requires_grad_(stage != "critic_pretrain")
        if critic is not None:
            critic.to(device)
            for p in critic.parameters():
                p.requires_grad_(not (stage == "finetune" and cfg.freeze_critic))
        self.updates = updates  # actor optimizer steps, carried across stages for KL annealing
        self.steps = 0  # optimizer steps of this stage
        self.validated_at = 0  # `steps` at the last validation
        self.history: list[dict] = []  # one row per epoch, from epoch 0
        # the kept candidate: its selection metric, epoch, models (checkpoint form) and row
        self.best = {"metric": -math.inf, "epoch": 0, "models": None, "row": None}
        self.guard = StopAndResume(stage, None, lambda: False)  # `run` sets the real one
        self.shuffle_gen = torch.Generator().manual_seed(stream_seed(cfg.seed, stage, "shuffle"))
        self.noise_gen = torch.Generator(device=device).manual_seed(
            stream_seed(cfg.seed, stage, "noise")
        )
        # actor_pretrain and the likelihood control step on NLL + beta KL; the control holds
        # beta where pretraining left it
        self.step_kind = (
            "likelihood" if stage == "actor_pretrain" or cfg.objective == "likelihood" else stage
        )
        self.fixed_beta = actor.cfg.beta(updates) if stage == "finetune" else None
        self.actor_opt = (
            _adam(actor.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            if stage in ("actor_pretrain", "finetune")
            else None
        )
        # The critic's optimizer: its own stage's settings in critic_pretrain; in finetune its
        # own learning rate and no weight decay (weight_decay there is the actor's).
        pretraining = stage == "critic_pretrain"
        self.critic_opt = None
        if pretraining or (self.step_kind == "finetune" and not cfg.freeze_critic):
            self.critic_opt = _adam(
                critic.parameters(),
                lr=cfg.learning_rate if pretraining else cfg.critic_learning_rate,
                weight_decay=cfg.weight_decay if pretraining else 0.0,
            )

    def run(self, n_epochs: int, out: _Outputs, guard: StopAndResume) -> dict:
        """Train `n_epochs` epochs (or those after the resume point), write the kept epoch's
        checkpoint and the history; returns the summary."""
        t0 = time.perf_counter()
        self.guard = guard
        # progress reports the metric the stage keeps its epoch by; critic_pretrain keeping its
        # last epoch has none, so its fit to validation users (val_critic_r)
        self.progress = Progress(
            self.cfg.train_stage,
            n_epochs,
            out.history,
            select_metric(self.cfg) or "val_critic_r",
            lambda rows: history_frame(rows, self.cfg.train_stage),
        )
        try:
            first = self.begin(n_epochs)
            for epoch in range(first, n_epochs + 1):
                t_epoch = time.perf_counter()
                with guard.epoch(epoch):
                    trained = self.train_epoch(epoch)
                row = {"epoch": epoch, "steps": self.steps, "updates": self.updates, **trained}
                if epoch == n_epochs or self.steps - self.validated_at >= self.cfg.validate_every:
                    row.update(self.validate())
                    self.select(epoch, row)
                row["seconds"] = time.perf_counter() - t_epoch
                self.record(epoch, row, out.checkpoint_dir)
                guard.end_epoch(epoch, time.perf_counter() - t_epoch, self)
            return self.finish(n_epochs, out, t0)
        except BaseException as exc:
            self.progress.fail(exc)
            raise

    def begin(self, n_epochs: int) -> int:
        """The first epoch to train: the one after the resume point's, or 1 once the starting
        models are validated as epoch 0."""
        t0 = time.perf_counter()
        resumed = self.guard.start(self)
        if resumed is None:
            row = {"epoch": 0, "steps": 0, "updates": self.updates, **self.validate()}
            row["seconds"] = time.perf_counter() - t0
            self.history = [row]
            # The starting actor is a candidate (finetuning may not help); an untrained critic
            # not.
            if select_metric(self.cfg) == SELECT_METRIC:
                self.best = {
                    "metric": row[SELECT_METRIC],
                    "epoch": 0,
                    "models": self.kept_states(),
                    "row": row,
                }
            log.info("%s epoch 0/%d (start): %s", self.cfg.train_stage, n_epochs, _fmt(row))
        self.progress.start(self.history)
        return 1 if resumed is None else resumed + 1

    def validate(self) -> dict[str, float]:
        """Validation in batches no larger than the training batches: each batch's (B, n_items)
        tensors then fit in the heap blocks training frees (see `reuse_freed_memory`), instead
        of extending the heap by as much again. Metrics are per user; on ML-20M-shaped data
        batches of 500 and of 1000 users gave bit-identical histories and checkpoints (MKL's
        per-row results did not depend on the batch there), though on toy shapes (60 items)
        the matrix multiplies round differently by batch size, in the 9th digit."""
        self.validated_at = self.steps
        rows = min(max(self.cfg.batch_size, VALIDATION_MIN_ROWS), EVAL_BATCH_SIZE)
        # Where a batch's (B, n_items) block is small, what the trim gives back is a few MB,
        # and it and the pages faulting in again cost 9 of a validation's 66 ms (ml-100k).
        trim = rows * self.data.n_items * 4 >= TRIM_MIN_BLOCK
        if trim:
            release_freed_memory()  # training's freed blocks, before validation's own
        row = validate(self.actor, self.critic, self.data, self.device, batch_size=rows)
        if trim:
            release_freed_memory()
        return row

    def select(self, epoch: int, row: dict) -> None:
        """Keep this epoch's models if they beat the best so far on the stage's metric."""
        metric = select_metric(self.cfg)
        if metric is not None and row[metric] > self.best["metric"]:
            self.best = {
                "metric": row[metric],
                "epoch": epoch,
                "models": self.kept_states(),
                "row": row,
            }

    def record(self, epoch: int, row: dict, checkpoint_dir) -> None:
        """The epoch's history row, progress line and `save_step` checkpoint."""
        self.history.append(row)
        shown = self.progress.epoch(epoch, row)
        if shown:
            log.info("%s epoch %s: %s", self.cfg.train_stage, shown, _fmt(row))
        if self.cfg.save_step and checkpoint_dir and epoch % self.cfg.save_step == 0:
            path = Path(checkpoint_dir) / f"{self.cfg.train_stage}-epoch{epoch:04d}.pt"
            self.save(path, epoch, row, model_states(self.actor, self.critic))

    def finish(self, n_epochs: int, out: _Outputs, t0: float) -> dict:
        """Write the kept epoch's checkpoint and the complete history; the run's summary."""
        stage, best_epoch, models, best_row = (
            self.cfg.train_stage,
            self.best["epoch"],
            self.best["models"],
            self.best["row"],
        )
        if models is None:  # the critic's last epoch (by choice, or no validated r to choose by)
            best_epoch, models, best_row = n_epochs, self.kept_states(), self.history[-1]
        self.save(out.checkpoint, best_epoch, best_row, models)
        write_csv(out.history, history_frame(self.history, stage, best_epoch))
        self.progress.finish(best_epoch, best_row)
        self.guard.done()
        total = time.perf_counter() - t0
        log.info("%s done in %.1fs: kept epoch %d (%s)", stage, total, best_epoch, _fmt(best_row))
        return {
            "train_stage": stage,
            "epochs": n_epochs,
            "steps": self.steps,
            "best_epoch": best_epoch,
            "seconds": total,
            **_metrics_of(best_row),
        }

    def kept_states(self) -> dict:
        """The models in checkpoint form; critic_pretrain adds the critic's Adam state, which
        finetune carries on."""
        states = model_states(self.actor, self.critic)
        if self.cfg.train_stage == "critic_pretrain":
            states["critic_opt_state"] = cpu_copy(self.critic_opt.state_dict())
        return states

    def save(self, path, epoch: int, row: dict, models: dict) -> None:
        save_checkpoint(
            path,
            stage=self.cfg.train_stage,
            epoch=epoch,
            models=models,
            data_hash=self.data.content_hash,
            extra={
                "metrics": _metrics_of(row),
                "updates": int(row["updates"]),  # at that epoch, for annealing
                "stage_config": config_dict(self.cfg),
            },
        )

    def carry_critic_optimizer(self, state: dict | None) -> bool:
        """Continue the critic's Adam moments and step count from critic_pretrain (RaCT_CF
        keeps one critic optimizer throughout), at finetune's learning rate; False when there
        is nothing to carry."""
        if self.critic_opt is None or not state:
            return False
        self.critic_opt.load_state_dict(state)
        for group in self.critic_opt.param_groups:  # loading brought the old stage's settings
            group.update(lr=self.cfg.critic_learning_rate, weight_decay=0.0)
        return True

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training users in a fresh random order; batch means of the
        stage's loss columns, the critic's fit on these batches, and the seconds taken."""
        kind, train = self.step_kind, self.data.train
        perm = torch.randperm(train.shape[0], generator=self.shuffle_gen).numpy()
        sums = dict.fromkeys(STEP_COLUMNS[kind], 0.0)
        # the critic's predictions and targets of the epoch, in batch order: filled in place,
        # as `ract.evaluate._fill` explains, rather than kept as one small tensor per batch
        preds, targets, done = None, None, 0
        start = time.perf_counter()
        beta = self.beta()
        batches = minibatches(perm, self.cfg.batch_size)
        for b, rows in enumerate(batches):
            x = sparse_rows(train, np.sort(rows), self.device)  # (B, n_items), never densified
            where = (epoch, b)
            if kind == "likelihood":
                beta = self.beta()
                self._likelihood_step(x, beta, sums, where)
            else:
                pred, target = self._critic_step(x, sums, where)
                if preds is None:
                    preds, targets = pred.new_empty(len(perm)), target.new_empty(len(perm))
                preds[done : done + len(rows)] = pred
                targets[done : done + len(rows)] = target
            done += len(rows)
            self.steps += 1
            self.guard.check(f"in epoch {epoch} after batch {b + 1} of {len(batches)}")
        row = {k: v / max(len(batches), 1) for k, v in sums.items()}
        if kind == "likelihood":
            row["beta"] = beta  # at the epoch's last step
        else:
            row["critic_r_train"] = pearson(preds, targets)
        row["train_seconds"] = time.perf_counter() - start
        return row

    def beta(self) -> float:
        """KL weight of the next likelihood step: annealed in actor_pretrain, held at the
        value pretraining reached in the control arm."""
        return (
            self.fixed_beta if self.fixed_beta is not None else self.actor.cfg.beta(self.updates)
        )

    def actor_forward(self, x):
        """The actor's training forward pass (dropout mask and z drawn from the noise stream),
        in bfloat16 autocast with `precision: bf16`, its outputs float32 either way."""
        bf16 = self.cfg.precision == "bf16"
        with torch.autocast(torch.device(self.device).type, torch.bfloat16, enabled=bf16):
            out = self.actor(x, self.noise_gen)
        if not bf16:
            return out
        return replace(
            out, logits=out.logits.float(), mu=out.mu.float(), logvar=out.logvar.float()
        )

    def _likelihood_step(self, x, beta, sums, where):
        self.actor.train()
        out = self.actor_forward(x)
        nll, kl = out.nll(x).mean(), out.kl().mean()
        loss = nll + beta * kl
        if self.cfg.l2_penalty:
            weights = [m.weight for m in (*self.actor.encoder, *self.actor.decoder)]
            loss = loss + self.cfg.l2_penalty * sum(w.pow(2).sum() for w in weights)
        sums["loss"] += _finite(loss, "actor loss", *where)
        sums["nll"] += nll.item()
        sums["kl"] += kl.item()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.updates += 1

    def _critic_step(self, x, sums, where):
        """critic_pretrain and finetune: one forward pass of the actor (dropout mask, sampled
        z) gives the critic's features and target; finetune first steps the actor on
        -critic, then the critic steps on its MSE for the same batch (unless frozen)."""
        finetune = self.cfg.train_stage == "finetune"
        self.actor.train()
        with torch.set_grad_enabled(finetune):
            out = self.actor_forward(x)
            feats = critic_features(out, x)  # (B, 3); the NLL keeps its graph in finetune
        target = critic_target(out, self.critic.cfg.metrics_k)  # (B,), no gradient
        sums["nll"] += feats[:, 2].mean().item()
        if finetune:
            self.critic.eval()  # running statistics: per-user scores (see Critic)
            actor_loss = -self.critic(feats).mean()
            sums["loss"] += _finite(actor_loss, "finetune actor loss", *where)
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.updates += 1
        feats = feats.detach()
        if self.critic_opt is None:  # frozen critic: measured, never updated
            self.critic.eval()
            with torch.no_grad():
                pred = self.critic(feats)
            sums["critic_mse"] += _finite(_critic_mse(pred, target), "critic MSE", *where)
            return pred, target
        self.critic.train()
        pred = self.critic(feats)
        mse = _critic_mse(pred, target)
        sums["critic_mse"] += _finite(mse, "critic MSE", *where)
        self.critic_opt.zero_grad(set_to_none=True)
        mse.backward()
        self.critic_opt.step()
        return pred.detach(), target


def _batch_starts(n_users: int, batch_size: int) -> np.ndarray:
    """First position of each minibatch in an epoch's order of `n_users` users."""
    starts = np.arange(0, n_users, max(batch_size, 2))
    if n_users > 1 and n_users - starts[-1] == 1:
        starts = starts[:-1]
    return starts


def minibatches(perm: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """An epoch's order of users cut into batches of `batch_size`, except that a last batch
    of one user joins the one before (batch_size 1: pairs). The critic's batch normalisation
    cannot normalise one value, and the actor's stages and the control arm share the batches.
    RaCT_CF drops partial batches instead; merging keeps every user in every epoch."""
    starts = _batch_starts(len(perm), batch_size)
    return [perm[a:b] for a, b in zip(starts, [*starts[1:], len(perm)])]


def n_batches(n_users: int, batch_size: int) -> int:
    """Minibatches (optimizer steps) an epoch over `n_users` users takes (see `minibatches`)."""
    return len(_batch_starts(n_users, batch_size))


def n_epochs(cfg: StageConfig, n_train: int) -> int:
    """Epochs a stage runs on `n_train` training users: `epochs`, or more for `min_steps`."""
    per_epoch = n_batches(n_train, cfg.batch_size)
    return max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch)) if per_epoch else cfg.epochs


def history_frame(history: list[dict], stage: str, kept_epoch: int | None = None):
    """The history CSV's table; `kept` (the epoch the checkpoint holds) is empty until the
    stage ends."""
    frame = pd.DataFrame(history).reindex(columns=HISTORY_COLUMNS)
    frame["stage"] = stage
    if kept_epoch is not None:
        frame["kept"] = frame["epoch"] == kept_epoch
    return frame


def train_stage(
    data: SplitData,
    cfg: StageConfig,
    *,
    out_checkpoint,
    history_path,
    actor_cfg: ActorConfig | None = None,
    critic_cfg: CriticConfig | None = None,
    pre_model_path=None,
    checkpoint_dir=None,
    device: str = "cpu",
    resume_path=None,
    resume_every: float = DEFAULT_EVERY,
) -> dict:
    """Run one stage and write its best checkpoint and per-epoch history (CSV).

    actor_pretrain starts from `actor_cfg` (or continues `pre_model_path`); the other stages
    need `pre_model_path`. critic_pretrain builds a new critic from `critic_cfg` unless the
    starting checkpoint already has one. Returns a summary of the run.

    With `resume_path` the stage keeps a resume point there (`ract.resume`: written every
    `resume_every` seconds and on SIGTERM, which stops the stage after the current batch), and
    a run of the same stage on the same settings and data continues from it, with the same
    final result as an uninterrupted run.
    """
    data.check_evaluable("validation")  # every stage selects or measures on validation users
    dev = resolve_device(device)
    reuse_freed_memory()
    torch.manual_seed(cfg.seed)  # weight initialisation; all sampling uses explicit generators
    init = _starting_checkpoint(data, cfg, pre_model_path)
    actor, critic = _stage_models(data, cfg, init, actor_cfg, critic_cfg)
    run = _Run(data, cfg, actor, critic, dev, int(init.get("updates", 0)) if init else 0)
    _check_critic_norm(run)
    if cfg.train_stage == "finetune" and cfg.carry_critic_optimizer:
        _carry_critic_optimizer(run, init, pre_model_path)
    del init  # the models hold copies of its tensors
    point = None
    if resume_path is not None:
        point = ResumePoint(resume_path, _run_fingerprint(run, pre_model_path), resume_every)
    out = _Outputs(
        Path(out_checkpoint), Path(history_path), Path(checkpoint_dir) if checkpoint_dir else None
    )
    with sigterm_flag() as stopping:
        guard = StopAndResume(cfg.train_stage, point, stopping)
        return run.run(n_epochs(cfg, data.train.shape[0]), out, guard)


def _run_fingerprint(run: _Run, pre_model_path) -> str:
    """What a resume point must have been written by: the same settings, starting
    checkpoint, data and kind of device."""
    settings = {
        "stage": config_dict(run.cfg),
        "actor": config_dict(run.actor.cfg),
        "critic": config_dict(run.critic.cfg) if run.critic is not None else None,
        "data": run.data.content_hash,
        "device": run.device.type,
    }
    return fingerprint(settings, pre_model_path)


def _starting_checkpoint(data: SplitData, cfg: StageConfig, pre_model_path) -> dict | None:
    """The checkpoint a stage starts from; None for an actor_pretrain from scratch."""
    if pre_model_path:
        init = load_checkpoint(pre_model_path, data_hash=data.content_hash, n_items=data.n_items)
        if (
            cfg.train_stage == "finetune"
            and cfg.objective != "likelihood"
            and init.get("critic_state") is None
        ):
            raise RactError(
                f"{pre_model_path}: has no critic; finetune starts from the "
                "critic_pretrain checkpoint"
            )
        return init
    if cfg.train_stage != "actor_pretrain":
        raise RactError(
            f"setting pre_model_path: stage {cfg.train_stage} starts from a trained "
            "actor; give the checkpoint of the previous stage"
        )
    return None


def _new_actor(data: SplitData, cfg: StageConfig, actor_cfg: ActorConfig | None) -> MultVAE:
    """A fresh actor; total_anneal_steps "auto" becomes a number for this stage's updates."""
    actor_cfg = actor_cfg or ActorConfig(n_items=data.n_items)
    if actor_cfg.total_anneal_steps == "auto":
        n_train = data.train.shape[0]
        planned = n_epochs(cfg, n_train) * n_batches(n_train, cfg.batch_size)  # actor updates
        actor_cfg = replace(
            actor_cfg, total_anneal_steps=auto_anneal_steps(actor_cfg.anneal_cap, planned)
        )
        log.info(
            "total_anneal_steps auto: %d (beta reaches %g after %.1f%% of %d updates)",
            actor_cfg.total_anneal_steps,
            actor_cfg.anneal_cap,
            100 * ANNEAL_FRACTION,
            planned,
        )
    return MultVAE(actor_cfg)


def _stage_models(
    data: SplitData,
    cfg: StageConfig,
    init: dict | None,
    actor_cfg: ActorConfig | None,
    critic_cfg: CriticConfig | None,
):
    """(actor, critic) of the stage: from the starting checkpoint, or new; critic None where
    the stage trains the actor alone. Built in this order, from the seeded global generator."""
    stage = cfg.train_stage
    if init is not None:
        actor, critic = build_actor(init), build_critic(init)
    else:
        actor, critic = _new_actor(data, cfg, actor_cfg), None
    if actor.cfg.n_items != data.n_items:
        raise RactError(f"setting n_items: actor has {actor.cfg.n_items}, data has {data.n_items}")
    if stage == "critic_pretrain" and critic is None:
        critic = Critic(critic_cfg or CriticConfig())
    if stage == "actor_pretrain" or cfg.objective == "likelihood":
        critic = None  # actor_pretrain and the control arm (a finetune) train the actor alone
    return actor, critic


def _check_critic_norm(run: _Run) -> None:
    """Refuse a critic that would normalise batches of one user."""
    if (
        run.critic_opt is not None
        and run.critic.cfg.input_norm == "running"
        and run.data.train.shape[0] < 2
    ):
        raise RactError(
            f"setting critic.input_norm: running normalises each batch of training "
            f"users by its own statistics, and {run.data.path} has one training "
            "user; use fixed"
        )


def _carry_critic_optimizer(run: _Run, init: dict, pre_model_path) -> None:
    if run.carry_critic_optimizer(init.get("critic_opt_state")):
        log.info("finetune: the critic's Adam state continues from %s", pre_model_path)
    elif run.critic_opt is not None:
        log.warning(
            "finetune: %s has no critic optimizer state (written by an older ract); "
            "the critic starts a fresh Adam",
            pre_model_path,
        )


def select_metric(cfg: StageConfig) -> str | None:
    """The validation column whose best epoch a stage keeps; None keeps the last epoch."""
    if cfg.train_stage != "critic_pretrain":
        return SELECT_METRIC
    return "val_critic_r" if cfg.critic_keep == "best_r" else None


def _metrics_of(row: dict) -> dict[str, float]:
    return {
        k: float(v) for k, v in row.items() if k.startswith(("val_", "critic_")) and v is not None
    }


# The history columns an epoch's log line leaves out: the stage and its counters, the parts of
# the loss, and what only the history CSV keeps. It shows the others, in the CSV's order.
_NOT_LOGGED = (
    "stage",
    "epoch",
    "steps",
    "updates",
    "nll",
    "kl",
    "val_critic_mse",
    "val_nll_r",
    "kept",
    "train_seconds",
)


def _fmt(row: dict) -> str:
    keys = [k for k in HISTORY_COLUMNS if k not in _NOT_LOGGED]
    return " ".join(f"{k}={row[k]:.4g}" for k in keys if k in row and row[k] is not None)

"""The actor (Mult-VAE, Liang et al. 2018) and the critic (Lobel et al. 2020), SPEC 2-3.

Settings use RecBole's names. One deliberate difference from RecBole: `latent_dimension` is the
size of z (the paper's 200), whereas RecBole's `latent_dimension: 256` is split into a mean and a
log-variance of 128 each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import RactError, check_settings
from .metrics import ndcg_from_hits, top_k_items
from .sparse import SparseInputLinear, SparseRows


@dataclass(frozen=True)
class ActorConfig:
    n_items: int
    latent_dimension: int = 200
    mlp_hidden_size: tuple[int, ...] = (600,)
    dropout_prob: float = 0.5
    anneal_cap: float = 0.2
    # "auto" is resolved by `ract.train` when pretraining starts: beta then reaches the cap at
    # the same fraction of training as in vae_cf on ML-20M (checkpoints hold the number).
    total_anneal_steps: int | str = 200_000
    # False gives Mult-DAE (Liang et al. 2018): the encoder's tanh output is the code itself,
    # no sampling and no KL term; with mlp_hidden_size=() it is their [I -> 200 -> I].
    variational: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mlp_hidden_size", tuple(int(h) for h in self.mlp_hidden_size))
        steps = self.total_anneal_steps
        check_settings(
            self,
            [
                (self.n_items >= 1, "n_items", "an integer >= 1"),
                (self.latent_dimension >= 1, "latent_dimension", "an integer >= 1"),
                (
                    all(h >= 1 for h in self.mlp_hidden_size),
                    "mlp_hidden_size",
                    "a list of integers >= 1",
                ),
                (0.0 <= self.dropout_prob < 1.0, "dropout_prob", "a number in [0, 1)"),
                (self.anneal_cap >= 0.0, "anneal_cap", "a number >= 0"),
                (
                    steps == "auto"
                    or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1),
                    "total_anneal_steps",
                    "an integer >= 1 or auto",
                ),
            ],
        )

    def beta(self, updates: int) -> float:
        """KL weight after `updates` optimizer steps (the counter runs across epochs)."""
        if self.total_anneal_steps == "auto":
            raise RactError(
                "setting total_anneal_steps: auto is resolved when actor "
                "pretraining starts (ract.train); this actor has no number yet"
            )
        return min(self.anneal_cap, updates / self.total_anneal_steps)


CRITIC_NORMS = ("fixed", "running")


@dataclass(frozen=True)
class CriticConfig:
    critic_layers: tuple[int, ...] = (100, 100, 10)
    metrics_k: int = 100
    # How the batch norm of the critic's three features uses statistics (see `Critic`):
    # "fixed", as RaCT_CF runs, or "running", updated by every critic training step.
    input_norm: str = "fixed"

    def __post_init__(self):
        object.__setattr__(self, "critic_layers", tuple(int(h) for h in self.critic_layers))
        check_settings(
            self,
            [
                (
                    all(h >= 1 for h in self.critic_layers),
                    "critic_layers",
                    "a list of integers >= 1",
                ),
                (self.metrics_k >= 1, "metrics_k", "an integer >= 1"),
                (
                    self.input_norm in CRITIC_NORMS,
                    "input_norm",
                    f"one of {', '.join(CRITIC_NORMS)}",
                ),
            ],
        )


def _mlp(dims: list[int]) -> nn.ModuleList:
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.normal_(layer.bias, std=0.001)  # vae_cf: truncated normal, stddev 0.001
    return layers


def _forward_mlp(layers: nn.ModuleList, h: torch.Tensor, activation) -> torch.Tensor:
    """Apply the layers with `activation` between them (none after the last)."""
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = activation(h)
    return h


@dataclass
class ActorOutput:
    logits: torch.Tensor  # (B, n_items)
    mu: torch.Tensor  # (B, latent)
    logvar: torch.Tensor  # (B, latent)
    kept: torch.Tensor  # (B, n_items) bool: the user's items the dropout mask kept
    dropped: torch.Tensor  # (B, n_items) bool: the user's items the mask dropped
    variational: bool = True
    # (B,) int64 counts of kept and dropped items when the forward pass knows them from the
    # sparse input; otherwise counted from the masks (a pass over (B, n_items) each).
    n_kept: torch.Tensor | None = None
    n_dropped: torch.Tensor | None = None

    def counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) int64 numbers of kept and of dropped items."""
        if self.n_kept is None or self.n_dropped is None:
            return self.kept.sum(dim=1), self.dropped.sum(dim=1)
        return self.n_kept, self.n_dropped

    def nll(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        """Multinomial NLL per user over the full row x (B,), dense or `SparseRows`."""
        log_p = F.log_softmax(self.logits, dim=1)  # (B, n_items)
        if isinstance(x, SparseRows):  # only the user's items: no (B, n_items) product
            return -x.row_sum(x.at_entries(log_p) * x.values)
        return -(log_p * x).sum(dim=1)

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per user (B,); zero for the non-variational Mult-DAE."""
        if not self.variational:
            return self.mu.new_zeros(self.mu.shape[0])
        return 0.5 * (-self.logvar + self.logvar.exp() + self.mu.pow(2) - 1.0).sum(dim=1)


class MultVAE(nn.Module):
    """Encoder n_items -> hidden... -> (mu, logvar); decoder latent -> hidden reversed ->
    n_items."""

    def __init__(self, cfg: ActorConfig):
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.mlp_hidden_size)
        # The last encoder layer emits mu and logvar side by side, as in vae_cf.
        code = 2 * cfg.latent_dimension if cfg.variational else cfg.latent_dimension
        self.encoder = _mlp([cfg.n_items, *hidden, code])
        self.encoder[0] = SparseInputLinear(self.encoder[0])  # reads SparseRows
        self.decoder = _mlp([cfg.latent_dimension, *hidden[::-1], cfg.n_items])

    def forward(
        self, x: torch.Tensor | SparseRows, generator: torch.Generator | None = None
    ) -> ActorOutput:
        """x: (B, n_items) binary rows, dense or `SparseRows` (the same result). In training
        mode a dropout mask and eps are drawn from `generator`; in eval mode the input is used
        whole and z = mu."""
        if not isinstance(x, SparseRows):
            x = SparseRows.from_dense(x)
        present = x.values > 0  # (nnz,): everything below works on the user's own entries
        h = x.l2_normalized()  # L2 row normalisation precedes dropout (vae_cf)
        kept = present
        if self.training and self.cfg.dropout_prob > 0:
            # Dropout only matters on the user's own items (the rest of the row is zero), so
            # one uniform draw per item the user has, not per cell of the (B, n_items) matrix.
            keep = 1.0 - self.cfg.dropout_prob
            mask = torch.rand(h.shape, generator=generator, device=h.device) < keep
            h = h * mask / keep  # inverted dropout
            kept = present & mask
        h = self.encoder[0](h, x)  # (B, hidden): x @ W.T + b
        if len(self.encoder) > 1:
            h = _forward_mlp(self.encoder[1:], torch.tanh(h), torch.tanh)
        dropped = present & ~kept
        masks = (x.dense(kept), x.dense(dropped))  # (B, n_items) bool each
        counts = dict(n_kept=x.row_sum(kept.long()), n_dropped=x.row_sum(dropped.long()))
        if not self.cfg.variational:  # Mult-DAE: deterministic code, tanh after every layer
            z = torch.tanh(h)  # (B, latent)
            logits = _forward_mlp(self.decoder, z, torch.tanh)
            return ActorOutput(logits, z, torch.zeros_like(z), *masks, False, **counts)
        mu, logvar = h.chunk(2, dim=1)  # (B, latent) each
        if self.training:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            z = mu
        logits = _forward_mlp(self.decoder, z, torch.tanh)  # (B, n_items)
        return ActorOutput(logits, mu, logvar, *masks, **counts)


def critic_features(out: ActorOutput, x: torch.Tensor | SparseRows) -> torch.Tensor:
    """(B, 3): items kept, items dropped (both detached counts), and the actor's NLL on the full
    row. Only the NLL carries gradient back to the actor (SPEC 3)."""
    n_kept, n_dropped = (n.to(out.logits.dtype) for n in out.counts())
    return torch.stack([n_kept, n_dropped, out.nll(x)], dim=1)


@torch.no_grad()
def critic_target(out: ActorOutput, k: int) -> torch.Tensor:
    """NDCG@k of the actor's logits with the dropped items as the relevant set (binary) and the
    kept items excluded. Users with nothing dropped get NaN (no relevant item to rank)."""
    scores = out.logits.detach().masked_fill(out.kept, -math.inf)
    top = top_k_items(scores, k)  # (B, k)
    hits = out.dropped.gather(1, top)
    return ndcg_from_hits(hits, out.counts()[1], k).to(out.logits.dtype)


class Critic(nn.Module):
    """Batch-normalised features -> ReLU MLP (`critic_layers`) -> Linear -> sigmoid.

    The feature normalisation has no learned scale or offset. How it uses statistics:

    - input_norm="fixed" (default, RaCT_CF as it runs): the statistics keep their initial
      values (mean 0, variance 1) and are never updated, in every stage. RaCT_CF builds
      `tf.contrib.layers.batch_norm(..., is_training=placeholder, trainable=False)`, feeds
      is_training=False in the critic and finetune phases, and with trainable=False the layer
      registers no update ops, so its moving mean and variance stay 0 and 1: the critic sees
      the raw counts and NLL, divided by sqrt(1 + eps).
    - input_norm="running" (this project before): the critic's own training steps normalise
      by batch statistics and update the running ones; the actor's finetuning step and all
      validation use the running statistics.

    Either way the actor's finetuning step scores each user by that user alone, so its gradient
    does not flow through other users' NLL via a batch mean.
    """

    def __init__(self, cfg: CriticConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.BatchNorm1d(3, affine=False)
        self.layers = _mlp([3, *cfg.critic_layers, 1])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.input_norm == "fixed":
            self.norm.eval()  # never batch statistics, never an update of the running ones
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = _forward_mlp(self.layers, self.norm(features), F.relu)  # (B, 1)
        return torch.sigmoid(h.squeeze(1))  # (B,)

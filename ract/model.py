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

from .errors import RactError
from .metrics import ndcg_from_hits, top_k_items


def _check(ok: bool, setting: str, expected: str, value) -> None:
    if not ok:
        raise RactError(f"setting {setting}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class ActorConfig:
    n_items: int
    latent_dimension: int = 200
    mlp_hidden_size: tuple[int, ...] = (600,)
    dropout_prob: float = 0.5
    anneal_cap: float = 0.2
    total_anneal_steps: int = 200_000
    # False gives Mult-DAE (Liang et al. 2018): the encoder's tanh output is the code itself,
    # no sampling and no KL term; with mlp_hidden_size=() it is their [I -> 200 -> I].
    variational: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mlp_hidden_size", tuple(int(h) for h in self.mlp_hidden_size))
        _check(self.n_items >= 1, "n_items", "an integer >= 1", self.n_items)
        _check(self.latent_dimension >= 1, "latent_dimension", "an integer >= 1",
               self.latent_dimension)
        _check(all(h >= 1 for h in self.mlp_hidden_size), "mlp_hidden_size",
               "a list of integers >= 1", list(self.mlp_hidden_size))
        _check(0.0 <= self.dropout_prob < 1.0, "dropout_prob", "a number in [0, 1)",
               self.dropout_prob)
        _check(self.anneal_cap >= 0.0, "anneal_cap", "a number >= 0", self.anneal_cap)
        _check(self.total_anneal_steps >= 1, "total_anneal_steps", "an integer >= 1",
               self.total_anneal_steps)

    def beta(self, updates: int) -> float:
        """KL weight after `updates` optimizer steps (the counter runs across epochs)."""
        return min(self.anneal_cap, updates / self.total_anneal_steps)


@dataclass(frozen=True)
class CriticConfig:
    critic_layers: tuple[int, ...] = (100, 100, 10)
    metrics_k: int = 100

    def __post_init__(self):
        object.__setattr__(self, "critic_layers", tuple(int(h) for h in self.critic_layers))
        _check(all(h >= 1 for h in self.critic_layers), "critic_layers",
               "a list of integers >= 1", list(self.critic_layers))
        _check(self.metrics_k >= 1, "metrics_k", "an integer >= 1", self.metrics_k)


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

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Multinomial NLL per user over the full row x (B,)."""
        return -(F.log_softmax(self.logits, dim=1) * x).sum(dim=1)

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per user (B,); zero for the non-variational Mult-DAE."""
        if not self.variational:
            return self.mu.new_zeros(self.mu.shape[0])
        return 0.5 * (-self.logvar + self.logvar.exp() + self.mu.pow(2) - 1.0).sum(dim=1)


class MultVAE(nn.Module):
    """Encoder n_items -> hidden... -> (mu, logvar); decoder latent -> hidden reversed -> n_items."""

    def __init__(self, cfg: ActorConfig):
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.mlp_hidden_size)
        # The last encoder layer emits mu and logvar side by side, as in vae_cf.
        code = 2 * cfg.latent_dimension if cfg.variational else cfg.latent_dimension
        self.encoder = _mlp([cfg.n_items, *hidden, code])
        self.decoder = _mlp([cfg.latent_dimension, *hidden[::-1], cfg.n_items])

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ActorOutput:
        """x: (B, n_items) binary rows. In training mode a dropout mask and eps are drawn from
        `generator`; in eval mode the input is used whole and z = mu."""
        h = F.normalize(x, dim=1)  # L2 row normalisation precedes dropout (vae_cf)
        present = x > 0
        if self.training and self.cfg.dropout_prob > 0:
            keep = 1.0 - self.cfg.dropout_prob
            mask = torch.rand(x.shape, generator=generator, device=x.device) < keep
            h = h * mask / keep  # inverted dropout
            kept = present & mask
        else:
            kept = present
        h = _forward_mlp(self.encoder, h, torch.tanh)
        if not self.cfg.variational:  # Mult-DAE: deterministic code, tanh after every layer
            z = torch.tanh(h)  # (B, latent)
            logits = _forward_mlp(self.decoder, z, torch.tanh)
            return ActorOutput(logits, z, torch.zeros_like(z), kept, present & ~kept, False)
        mu, logvar = h.chunk(2, dim=1)  # (B, latent) each
        if self.training:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            z = mu
        logits = _forward_mlp(self.decoder, z, torch.tanh)  # (B, n_items)
        return ActorOutput(logits, mu, logvar, kept, present & ~kept)


def critic_features(out: ActorOutput, x: torch.Tensor) -> torch.Tensor:
    """(B, 3): items kept, items dropped (both detached counts), and the actor's NLL on the full
    row. Only the NLL carries gradient back to the actor (SPEC 3)."""
    n_kept = out.kept.sum(dim=1, dtype=x.dtype)
    n_dropped = out.dropped.sum(dim=1, dtype=x.dtype)
    return torch.stack([n_kept, n_dropped, out.nll(x)], dim=1)


@torch.no_grad()
def critic_target(out: ActorOutput, k: int) -> torch.Tensor:
    """NDCG@k of the actor's logits with the dropped items as the relevant set (binary) and the
    kept items excluded. Users with nothing dropped get NaN (no relevant item to rank)."""
    scores = out.logits.detach().masked_fill(out.kept, -math.inf)
    top = top_k_items(scores, k)  # (B, k)
    hits = out.dropped.gather(1, top)
    return ndcg_from_hits(hits, out.dropped.sum(dim=1), k).to(out.logits.dtype)


class Critic(nn.Module):
    """Batch-normalised features -> ReLU MLP (`critic_layers`) -> Linear -> sigmoid.

    The feature normalisation has no learned scale or offset. Its running statistics are
    updated only by the critic's own training steps (module in train mode, batch statistics);
    the actor's finetuning step and all validation use the running statistics (eval mode), so
    each user's score depends on that user alone and the actor's gradient does not flow
    through other users' NLL via the batch mean.
    """

    def __init__(self, cfg: CriticConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.BatchNorm1d(3, affine=False)
        self.layers = _mlp([3, *cfg.critic_layers, 1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = _forward_mlp(self.layers, self.norm(features), F.relu)  # (B, 1)
        return torch.sigmoid(h.squeeze(1))  # (B,)

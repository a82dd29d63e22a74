"""Checkpoints: state dicts plus the plain values needed to rebuild the models (nanoGPT-style
`model_args`), the stage and epoch, and the hash of the data they were trained on.

They hold tensors and plain values only and load with `torch.load(..., weights_only=True)`, so
a file carrying pickled objects is refused rather than executed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import __version__
from .errors import RactError
from .io import atomic_path, config_dict
from .model import ActorConfig, Critic, CriticConfig, MultVAE

FORMAT_VERSION = 1


def model_states(actor: MultVAE, critic: Critic | None) -> dict:
    """CPU copies of the models' settings and weights, in checkpoint form."""
    def cpu(module):
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    return {
        "actor_args": config_dict(actor.cfg),
        "actor_state": cpu(actor),
        "critic_args": config_dict(critic.cfg) if critic is not None else None,
        "critic_state": cpu(critic) if critic is not None else None,
    }


def save_checkpoint(path, *, stage: str, epoch: int, models: dict, data_hash: str,
                    metrics: dict | None = None, extra: dict | None = None) -> None:
    """Write `models` (from `model_states`) with the stage, epoch and data hash, atomically."""
    state = {
        "format_version": FORMAT_VERSION,
        "ract_version": __version__,
        "stage": stage,
        "epoch": int(epoch),
        **models,
        "data": {"content_hash": data_hash, "n_items": models["actor_args"]["n_items"]},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, *, data_hash: str | None = None, n_items: int | None = None,
                    any_kind: bool = False) -> dict:
    """Read and check a checkpoint; with `data_hash`/`n_items`, refuse one from other data.
    `any_kind` also accepts baseline checkpoints (which `ract.baselines` reads)."""
    path = Path(path)
    if not path.is_file():
        raise RactError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RactError(f"{path}: not a loadable ract checkpoint (only tensors and plain values "
                        f"are accepted): {reason}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise RactError(f"{path}: not a ract checkpoint of format {FORMAT_VERSION}")
    if "kind" in state:
        if any_kind:
            return state
        raise RactError(f"{path}: a {state['kind']} baseline, not a ract training checkpoint")
    ckpt_items = state["data"]["n_items"]
    if n_items is not None and ckpt_items != n_items:
        raise RactError(f"{path}: checkpoint was trained on {ckpt_items} items, the data has "
                        f"{n_items}; it belongs to another data set")
    if data_hash is not None and state["data"]["content_hash"] != data_hash:
        raise RactError(f"{path}: checkpoint was trained on data with hash "
                        f"{state['data']['content_hash'][:12]}, this split has {data_hash[:12]}; "
                        "it belongs to another data set or preparation")
    return state


def load_model(path, *, data_hash: str | None = None, n_items: int | None = None):
    """(model, info) from a checkpoint: the actor of a ract stage, or a baseline
    (`ract.baselines`); info holds the stage (or baseline kind) and the epoch kept."""
    from .baselines import KINDS, load_baseline
    state = load_checkpoint(path, data_hash=data_hash, n_items=n_items, any_kind=True)
    if state.get("kind") in KINDS:
        model = load_baseline(path, data_hash=data_hash, n_items=n_items)
        return model, {"stage": state["kind"], "epoch": None}
    return build_actor(state), {"stage": state["stage"], "epoch": state["epoch"]}


def build_actor(state: dict) -> MultVAE:
    actor = MultVAE(ActorConfig(**state["actor_args"]))
    actor.load_state_dict(state["actor_state"])
    return actor


def build_critic(state: dict) -> Critic | None:
    if state.get("critic_state") is None:
        return None
    critic = Critic(CriticConfig(**state["critic_args"]))
    critic.load_state_dict(state["critic_state"])
    return critic

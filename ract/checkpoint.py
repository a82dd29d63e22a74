"""Checkpoints: state dicts plus the plain values needed to rebuild the models (nanoGPT-style
`model_args`), the stage and epoch, and the hash of the data they were trained on.

They hold tensors and plain values only and load with `torch.load(..., weights_only=True)`, so
a file carrying pickled objects is refused rather than executed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import __version__
from .errors import ModelFailure, RactError
from .formats import CHECKPOINT_FORMAT_VERSION
from .io import atomic_path, config_dict
from .model import ActorConfig, Critic, CriticConfig, MultVAE


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


def save_checkpoint(
    path,
    *,
    stage: str,
    epoch: int,
    models: dict,
    data_hash: str,
    extra: dict | None = None,
) -> None:
    """Write `models` (from `model_states`) with the stage, epoch and data hash, atomically.

    `extra` adds fields, or replaces them: "metrics" (name -> value, as floats) is empty
    unless given there."""
    extra = dict(extra or {})
    metrics = extra.pop("metrics", {})
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "ract_version": __version__,
        "stage": stage,
        "epoch": int(epoch),
        **models,
        "data": {"content_hash": data_hash, "n_items": models["actor_args"]["n_items"]},
        "metrics": {k: float(v) for k, v in metrics.items()},
        **extra,
    }
    write_state(path, state)


def write_state(path, state: dict) -> None:
    """Write a file of checkpoint format atomically (`ract.io.atomic_path`), through a file
    object: given a path, torch.save names the zip's inner folder after the file, here the
    temporary one, so the same state gave different bytes every time; through a file object
    the folder is torch's fixed `archive`, and the same state gives the same bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def save_failure(path, *, model: str, reason: str, data_hash: str) -> None:
    """Write, in place of a checkpoint, the record of a model that could not be fit
    (`ModelFailure`), so that evaluation and the comparison report it instead of stopping."""
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "ract_version": __version__,
        "failed": str(reason),
        "model": str(model),
        "data": {"content_hash": data_hash},
    }
    write_state(path, state)


def refuse_failed(path, state: dict) -> None:
    """Refuse the record `save_failure` wrote in place of a model, naming why it failed."""
    if "failed" in state:
        raise ModelFailure(
            f"{path}: {state.get('model', 'the model')} could not be fit: {state['failed']}"
        )


def read_state(path, what: str = "checkpoint") -> dict:
    """torch.load with weights_only=True: tensors and plain values, never pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise RactError(
            f"{path}: a folder, not a {what} file"
            if path.is_dir()
            else f"{path}: {what} file not found"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RactError(
            f"{path}: not a loadable ract {what} (only tensors and plain values "
            f"are accepted): {reason}"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise RactError(f"{path}: not a ract {what} of format {CHECKPOINT_FORMAT_VERSION}")
    return state


def check_data(path, recorded: dict, *, data_hash: str | None, n_items: int | None) -> None:
    """Refuse a model made from other data than the split it is used with."""
    if n_items is not None and recorded.get("n_items") != n_items:
        raise RactError(
            f"{path}: made from data with {recorded.get('n_items')} items, this "
            f"split has {n_items}; it belongs to another data set"
        )
    ckpt_hash = str(recorded.get("content_hash"))
    if data_hash is not None and ckpt_hash != data_hash:
        raise RactError(
            f"{path}: made from data with hash {ckpt_hash[:12]}, this split has "
            f"{data_hash[:12]}; it belongs to another data set or preparation"
        )


def load_checkpoint(path, *, data_hash: str | None = None, n_items: int | None = None) -> dict:
    """Read and check a training checkpoint; with `data_hash`/`n_items`, refuse one from other
    data."""
    state = read_state(path)
    refuse_failed(path, state)
    if "kind" in state:
        raise RactError(f"{path}: a {state['kind']} baseline, not a ract training checkpoint")
    check_data(path, state["data"], data_hash=data_hash, n_items=n_items)
    return state


def build_actor(state: dict) -> MultVAE:
    actor = MultVAE(ActorConfig(**state["actor_args"]))
    actor.load_state_dict(state["actor_state"])
    return actor


def build_critic(state: dict) -> Critic | None:
    if state.get("critic_state") is None:
        return None
    # critics saved before input_norm existed normalised with running statistics
    critic = Critic(CriticConfig(**{"input_norm": "running", **state["critic_args"]}))
    critic.load_state_dict(state["critic_state"])
    return critic

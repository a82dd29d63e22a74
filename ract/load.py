"""Any saved model from its file, whichever kind it is: the actor of a RaCT training stage
(`ract.checkpoint`) or a non-neural baseline (`ract.baselines`). Here, above both, so that
neither of the two has to import the other to dispatch."""

from __future__ import annotations

from .baselines import baseline_from_state
from .checkpoint import build_actor, check_data, read_state, refuse_failed


def load_model(path, *, data_hash: str | None = None, n_items: int | None = None):
    """(model, info) from a checkpoint: the actor of a ract stage, or a baseline; info holds
    the stage (or baseline kind) and the epoch kept. With `data_hash`/`n_items`, refuses a
    model made from other data."""
    state = read_state(path)
    refuse_failed(path, state)
    if "kind" in state:
        model = baseline_from_state(path, state, data_hash=data_hash, n_items=n_items)
        return model, {"stage": state["kind"], "epoch": None}
    check_data(path, state["data"], data_hash=data_hash, n_items=n_items)
    return build_actor(state), {"stage": state["stage"], "epoch": state["epoch"]}

"""Adam for the training stages, in place of `torch.optim.Adam`.

torch.optim's optimizers import torch._dynamo the first time they are used (the base class
wraps `__init__`, `add_param_group`, `zero_grad` and `load_state_dict` in
`torch._disable_dynamo`, and `Adam.step` is wrapped to call dynamo's `graph_break` every
step): about 1 s of every training process, each stage being its own process in the
workflow, for nothing this project uses. This `Adam` takes no such path.

It runs the same update as `torch.optim.Adam(params, fused=True, ...)`:

- where torch has a fused Adam kernel for the parameters' device (CPU, CUDA, MPS, XPU, HPU,
  MTIA; floating-point parameters), it calls that kernel, `torch._fused_adam_`, with the
  arguments torch's fused Adam gives it (float32 step tensors on the parameters' device,
  counted up just before the call; no amsgrad, no maximize, no gradient scaling): results
  are bit-identical to torch.optim.Adam(fused=True);
- elsewhere (or for a param group whose state says `fused` is off) it runs the formula of
  torch's single-tensor Adam (`torch.optim.adam._single_tensor_adam`, not capturable, not
  differentiable), op for op: bit-identical to torch.optim.Adam(foreach=False, fused=False),
  while torch's default non-fused path on CUDA (foreach) may round differently.

`state_dict()` and `load_state_dict()` keep torch.optim.Adam's format ({"state": {index:
{"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [{every Adam setting, "params":
[indices]}]}): the state of either loads into the other and the steps go on the same.
Only plain Adam is implemented: amsgrad, maximize, capturable, differentiable and decoupled
weight decay (AdamW) are refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import chain

import torch

# torch.optim.Adam's param-group settings and defaults, in its order (state dicts keep it)
ADAM_DEFAULTS = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}
# settings an older torch's Adam state may lack
_ADDED_SINCE = (
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "decoupled_weight_decay",
    "fused",
)
# settings this Adam leaves out: a group must have them off
_NOT_IMPLEMENTED = (
    "amsgrad",
    "maximize",
    "capturable",
    "differentiable",
    "decoupled_weight_decay",
)
# device types torch has the fused Adam kernel for (torch.utils._foreach_utils
# ._get_fused_kernels_supported_devices), besides a registered privateuse1 backend
_FUSED_DEVICES = ("mps", "cuda", "xpu", "hpu", "cpu", "mtia")


def fusable(p: torch.Tensor) -> bool:
    """Whether torch's fused Adam kernel takes this parameter (as torch.optim checks it)."""
    devices = (*_FUSED_DEVICES, torch._C._get_privateuse1_backend_name())
    return p.device.type in devices and torch.is_floating_point(p)


class Adam:
    """Adam (Kingma and Ba) with L2 weight decay added to the gradient, as torch.optim.Adam
    without amsgrad: `step`, `zero_grad`, `param_groups` (one group; its "lr" and
    "weight_decay" may be changed between steps), `state_dict`, `load_state_dict`."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
    ):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        if not (lr >= 0 and eps >= 0 and weight_decay >= 0 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"Adam: invalid lr {lr}, betas {betas}, eps {eps} or weight_decay")
        if any(torch.is_complex(p) for p in params):
            raise ValueError("Adam: complex parameters are not supported")
        settings = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        # fused as torch.optim.Adam(fused=True) where the kernel takes every parameter
        fused = True if all(fusable(p) for p in params) else None
        self.defaults = {**ADAM_DEFAULTS, **settings, "fused": fused}
        self.param_groups = [{"params": params, **self.defaults}]
        self.state: dict[torch.Tensor, dict] = {}  # per parameter, created at its first step

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient; the others, and their state,
        stay as they are."""
        for group in self.param_groups:
            lists = self._with_grads(group)
            if not lists["params"]:
                continue
            if group["fused"] and all(fusable(p) for p in lists["params"]):
                _fused_step(group, lists)
            else:
                _formula_step(group, lists)

    def _with_grads(self, group: dict) -> dict[str, list[torch.Tensor]]:
        """The group's parameters that have a gradient, with their gradients and state
        (created here at a parameter's first step, as torch.optim.Adam creates it)."""
        lists = {"params": [], "grads": [], "exp_avgs": [], "exp_avg_sqs": [], "steps": []}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            state = self.state.get(p)
            if not state:
                state = self.state[p] = _new_state(p, bool(group["fused"]))
            lists["params"].append(p)
            lists["grads"].append(p.grad)
            lists["exp_avgs"].append(state["exp_avg"])
            lists["exp_avg_sqs"].append(state["exp_avg_sq"])
            lists["steps"].append(state["step"])
        return lists

    def state_dict(self) -> dict:
        """torch.optim.Adam's state dict: the live state tensors keyed by the parameters'
        positions across the groups, and each group's settings with those positions."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)] if torch.is_tensor(p) else p: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take the state and group settings of `state_dict` (ours or torch.optim.Adam's) for
        these parameters, matched by position as torch.optim does; tensors are moved to the
        parameters' devices (and dtypes, but for "step") the way torch.optim moves them."""
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if [len(g["params"]) for g in saved_groups] != [
            len(g["params"]) for g in self.param_groups
        ]:
            raise ValueError("Adam state: its parameter groups do not match these parameters")
        for group in saved_groups:
            for key in _ADDED_SINCE:  # as torch.optim.Adam.__setstate__, in its order
                group.setdefault(key, ADAM_DEFAULTS[key])
            refused = [key for key in _NOT_IMPLEMENTED if group[key]]
            if refused:
                raise ValueError(f"Adam state: {', '.join(refused)} not implemented here")
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        saved = chain.from_iterable(g["params"] for g in saved_groups)
        id_map = dict(zip(saved, params, strict=True))
        fused = {i: bool(g["fused"]) for g in saved_groups for i in g["params"]}
        self.state = {
            id_map.get(k, k): _moved(id_map[k], v, fused[k]) if k in id_map else v
            for k, v in state_dict["state"].items()
        }
        for group, saved_group in zip(self.param_groups, saved_groups, strict=True):
            saved_group["params"] = group["params"]
        self.param_groups = saved_groups


def _new_state(p: torch.Tensor, fused: bool) -> dict[str, torch.Tensor]:
    """A parameter's state before its first step: the step count a float32 scalar, on the
    parameter's device for the fused kernel, on the CPU otherwise (as torch.optim has it)."""
    if fused:
        step = torch.zeros((), dtype=torch.float32, device=p.device)
    else:
        step = torch.tensor(0.0, dtype=_scalar_dtype())
    return {
        "step": step,
        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
    }


def _scalar_dtype() -> torch.dtype:
    """The dtype of a non-fused step count (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _moved(p: torch.Tensor, state: dict, fused: bool) -> dict:
    """A loaded parameter state on `p`'s device, as torch.optim.Optimizer.load_state_dict
    casts it: moment tensors to the parameter's dtype; the step count to a float32 tensor on
    the device when the saved group was fused, else as it was (a number becomes a tensor)."""
    moved = {}
    for key, value in state.items():
        if key == "step":
            if not torch.is_tensor(value):
                value = torch.tensor(float(value), dtype=_scalar_dtype())
            moved[key] = value.to(dtype=torch.float32, device=p.device) if fused else value
        elif torch.is_tensor(value) and torch.is_floating_point(p):
            moved[key] = value.to(dtype=p.dtype, device=p.device)
        elif torch.is_tensor(value):
            moved[key] = value.to(device=p.device)
        else:
            moved[key] = value
    return moved


def _fused_step(group: dict, lists: dict[str, list[torch.Tensor]]) -> None:
    """torch.optim.adam._fused_adam without amsgrad, maximize or gradient scaling: per device
    and dtype, count the steps up, then one `torch._fused_adam_` call."""
    beta1, beta2 = group["betas"]
    by_kind: dict[tuple, list[int]] = {}
    for i, p in enumerate(lists["params"]):
        by_kind.setdefault((p.device, p.dtype), []).append(i)
    for rows in by_kind.values():
        sub = {name: [tensors[i] for i in rows] for name, tensors in lists.items()}
        torch._foreach_add_(sub["steps"], 1)
        torch._fused_adam_(
            sub["params"],
            sub["grads"],
            sub["exp_avgs"],
            sub["exp_avg_sqs"],
            [],  # max_exp_avg_sqs: amsgrad only
            sub["steps"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def _formula_step(group: dict, lists: dict[str, list[torch.Tensor]]) -> None:
    """torch.optim.adam._single_tensor_adam for real tensors, not capturable, not
    differentiable, without amsgrad or maximize: the same operations in the same order."""
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(
        lists["params"], lists["grads"], lists["exp_avgs"], lists["exp_avg_sqs"], lists["steps"]
    ):
        step_t += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)

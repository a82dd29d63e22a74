"""ract.optim.Adam against torch.optim.Adam: the same updates bit for bit, state dicts that
move either way, and training that never imports torch._dynamo."""

import io
import subprocess
import sys
import textwrap

import pytest
import torch

from ract.optim import Adam

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (4, 6)]
NO_GRAD = 4  # this parameter never has a gradient: no state, as in torch


def twin_params(seed=0, device="cpu"):
    """Two identical sets of parameters; one of them non-contiguous (a permuted leaf)."""
    g = torch.Generator().manual_seed(seed)
    first = [torch.randn(s, generator=g) for s in SHAPES]
    first[2] = torch.randn(2, 4, 3, generator=g).permute(2, 1, 0)  # (3, 4, 2), not contiguous
    return [[torch.nn.Parameter(t.to(device, copy=True)) for t in first] for _ in range(2)]


def give_grads(param_sets, step):
    """The same random gradients to each set; parameter 1 skips every third step."""
    g = torch.Generator().manual_seed(1000 + step)
    for i, shape in enumerate(SHAPES):
        grad = torch.randn(shape, generator=g)
        for params in param_sets:
            skip = i == NO_GRAD or (i == 1 and step % 3 == 2)
            params[i].grad = None if skip else grad.to(params[i].device, copy=True)


def assert_same(x, y, where="state"):
    """Equal structure (types, key order) and bit-identical tensors (dtype, device too)."""
    assert type(x) is type(y), where
    if isinstance(x, torch.Tensor):
        assert (x.dtype, x.device, x.shape) == (y.dtype, y.device, y.shape), where
        assert torch.equal(x, y), where
    elif isinstance(x, dict):
        assert list(x) == list(y), where
        for k in x:
            assert_same(x[k], y[k], f"{where}/{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


def run_steps(optimizers, param_sets, steps, first=0):
    for step in range(first, first + steps):
        give_grads(param_sets, step)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        for same_param in zip(*param_sets):
            assert all(torch.equal(same_param[0], q) for q in same_param[1:]), f"step {step}"


def reloaded(state: dict) -> dict:
    """A state dict through torch.save and torch.load, as checkpoints and resume files."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_steps_match_torch_fused_adam_bit_for_bit(weight_decay):
    ours, theirs = twin_params()
    settings = {"lr": 3e-3, "weight_decay": weight_decay}
    opt = Adam(ours, **settings)
    ref = torch.optim.Adam(theirs, fused=True, **settings)
    run_steps([opt, ref], [ours, theirs], 6)
    assert_same(opt.state_dict(), ref.state_dict())
    assert NO_GRAD not in opt.state_dict()["state"]
    for o in (opt, ref):  # as finetune sets the carried critic optimizer's
        o.param_groups[0].update(lr=1e-4, weight_decay=0.0 if weight_decay else 1e-3)
    run_steps([opt, ref], [ours, theirs], 4, first=6)
    assert_same(opt.state_dict(), ref.state_dict())


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_formula_without_the_fused_kernel_matches_torch_single_tensor_adam(weight_decay):
    ours, theirs = twin_params()
    opt = Adam(ours, lr=3e-3, weight_decay=weight_decay)
    # as where the device has no fused kernel (foreach only to match the reference's dict)
    opt.param_groups[0].update(fused=None, foreach=False)
    ref = torch.optim.Adam(theirs, lr=3e-3, weight_decay=weight_decay, foreach=False)
    run_steps([opt, ref], [ours, theirs], 6)
    assert_same(opt.state_dict(), ref.state_dict())


@pytest.mark.parametrize("source", ["torch", "ours"])
def test_state_moves_between_torch_adam_and_ours(source):
    """A checkpoint's or resume file's optimizer state from either loads into the other, and
    both go on with identical steps."""
    make = {
        "torch": lambda ps: torch.optim.Adam(ps, lr=3e-3, weight_decay=1e-3, fused=True),
        "ours": lambda ps: Adam(ps, lr=3e-3, weight_decay=1e-3),
    }
    target = "ours" if source == "torch" else "torch"
    ours, theirs = twin_params()
    first = make[source](ours)
    run_steps([first], [ours], 5)
    for p, q in zip(ours, theirs):
        q.data.copy_(p.data)
    second = make[target](theirs)
    second.load_state_dict(reloaded(first.state_dict()))
    assert_same(second.state_dict(), first.state_dict())
    run_steps([first, second], [ours, theirs], 5, first=5)
    assert_same(second.state_dict(), first.state_dict())


def test_zero_grad_keeps_zeroed_gradients_when_asked():
    ours, theirs = twin_params()
    opt, ref = Adam(ours), torch.optim.Adam(theirs, fused=True)
    give_grads([ours, theirs], 0)
    opt.zero_grad(set_to_none=False)
    ref.zero_grad(set_to_none=False)
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        assert p.grad is None or (torch.equal(p.grad, q.grad) and not p.grad.any())


def test_settings_it_does_not_implement_are_refused():
    ours, theirs = twin_params()
    ref = torch.optim.Adam(theirs, amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad not implemented"):
        Adam(ours).load_state_dict(ref.state_dict())
    with pytest.raises(ValueError, match="parameter groups do not match"):
        Adam(ours[:2]).load_state_dict(ref.state_dict())
    with pytest.raises(ValueError, match="invalid lr"):
        Adam(ours, lr=-1.0)


def imports_no_dynamo(code: str) -> None:
    """Run `code` in a fresh interpreter, then check it never imported torch._dynamo."""
    check = "\nimport sys\nassert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + check], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_optimizer_never_imports_dynamo():
    imports_no_dynamo(
        """
        import io
        import torch
        from ract.optim import Adam

        p = torch.nn.Parameter(torch.randn(4, 3))
        opt = Adam([p], lr=1e-3, weight_decay=1e-2)
        p.grad = torch.ones(4, 3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        Adam([p]).load_state_dict(torch.load(buffer, weights_only=True))
        """
    )


def test_training_never_imports_dynamo(split, tmp_path):
    """All three stages, the critic's Adam carried into finetune, with a resume point."""
    imports_no_dynamo(
        f"""
        from ract.data.splits import load_split
        from ract.model import ActorConfig, CriticConfig
        from ract.train import stage_defaults, train_stage

        data = load_split({str(split.path)!r})
        out, before = {str(tmp_path)!r}, None
        actor = ActorConfig(n_items=data.n_items, latent_dimension=8, mlp_hidden_size=(16,))
        for stage in ("actor_pretrain", "critic_pretrain", "finetune"):
            train_stage(
                data,
                stage_defaults(stage, epochs=1, min_steps=0, batch_size=64),
                out_checkpoint=f"{{out}}/{{stage}}.pt",
                history_path=f"{{out}}/{{stage}}.csv",
                actor_cfg=actor,
                critic_cfg=CriticConfig(critic_layers=(8,), metrics_k=10),
                pre_model_path=before,
                resume_path=f"{{out}}/{{stage}}-resume.pt",
            )
            before = f"{{out}}/{{stage}}.pt"
        """
    )

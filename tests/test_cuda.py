"""The CUDA path: every stage, bf16, evaluation, EASE and `device: auto` on a GPU, against the
CPU. Marked `cuda`; skipped where torch sees no CUDA device (every CI run). benchmarks/gpu.sh
runs them on a GPU machine. RACT_TEST_DEVICE=cpu runs the same code on the CPU, which checks
the tests themselves (not the GPU) on a machine without one."""

import os

import pandas as pd
import pytest
import torch

from ract.baselines import select_ease_lambda
from ract.evaluate import evaluate_model
from ract.load import load_model
from ract.metrics import top_k_items
from ract.runtime import resolve_device

from test_optim import assert_same, reloaded, run_steps, twin_params
from test_train import run_all

DEVICE = os.environ.get("RACT_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"
    ),
]


def test_auto_device_is_the_gpu():
    assert resolve_device("auto").type == ("cuda" if DEVICE.startswith("cuda") else "cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_stage_trains_on_the_gpu_and_its_checkpoints_load_on_the_cpu(
    split, tmp_path, precision
):
    paths, summaries = run_all(split, tmp_path / "gpu", precision=precision, device=DEVICE)
    for stage, (checkpoint, history) in paths.items():
        trained = pd.read_csv(history).iloc[1:]  # epoch 0 is the starting model
        loss = trained["critic_mse" if stage == "critic_pretrain" else "loss"].to_numpy()
        assert len(loss) and torch.isfinite(torch.tensor(loss)).all(), stage
        model, info = load_model(checkpoint)  # saved on the CPU: readable without a GPU
        assert info["stage"] == stage
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    # the GPU's result is the CPU's up to rounding and kernel order: same data, seed, schedule
    _, cpu = run_all(split, tmp_path / "cpu", precision=precision)
    for stage in paths:
        gpu_ndcg = summaries[stage]["val_ndcg@100"]
        cpu_ndcg = cpu[stage]["val_ndcg@100"]
        assert abs(gpu_ndcg - cpu_ndcg) < 0.05, (stage, gpu_ndcg, cpu_ndcg)


def test_evaluation_on_the_gpu_gives_the_cpus_metrics(split, tmp_path):
    paths, _ = run_all(split, tmp_path)
    model, _ = load_model(paths["finetune"][0])
    test = split.eval_split("test")
    on_cpu = evaluate_model(model, test)
    on_gpu = evaluate_model(model.to(DEVICE), test, device=DEVICE)
    for key, value in on_cpu.items():
        assert torch.allclose(on_gpu[key], value, atol=1e-6, equal_nan=True), key


def test_top_k_on_the_gpu_matches_the_cpu():
    scores = torch.randn(300, 5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top_k_items(scores.to(DEVICE), 100).cpu(), top_k_items(scores, 100))


def test_ease_on_the_gpu_picks_the_cpus_lambda(split):
    lambdas = [10.0, 100.0, 1000.0]
    _, cpu_rows = select_ease_lambda(split, lambdas, k=20)
    _, gpu_rows = select_ease_lambda(split, lambdas, k=20, device=DEVICE)
    for c, g in zip(cpu_rows, gpu_rows, strict=True):
        assert c["lam"] == g["lam"] and abs(c["val_ndcg@20"] - g["val_ndcg@20"]) < 1e-4


def test_adam_on_the_gpu_matches_torch_fused_adam_and_its_state_moves_to_the_cpu():
    """ract.optim.Adam on the device: the fused kernel's steps bit for bit as
    torch.optim.Adam(fused=True), step counts on the device; the state loads into a CPU
    torch Adam (a checkpoint read elsewhere) and back."""
    from ract.optim import Adam

    ours, theirs = twin_params(device=DEVICE)
    opt = Adam(ours, lr=3e-3, weight_decay=1e-2)
    ref = torch.optim.Adam(theirs, lr=3e-3, weight_decay=1e-2, fused=True)
    run_steps([opt, ref], [ours, theirs], 6)
    assert_same(opt.state_dict(), ref.state_dict())
    assert all(s["step"].device == ours[0].device for s in opt.state.values())
    cpu = [torch.nn.Parameter(p.detach().cpu()) for p in ours]
    on_cpu = torch.optim.Adam(cpu, fused=True)
    on_cpu.load_state_dict(reloaded(opt.state_dict()))
    back = Adam(ours)
    back.load_state_dict(reloaded(on_cpu.state_dict()))
    assert_same(back.state_dict(), opt.state_dict())

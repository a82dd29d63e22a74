"""Where and how long numeric jobs (training, evaluation) run: the device, and process
settings that change speed only, never results."""

from __future__ import annotations

import ctypes
import sys

import torch

from .errors import RactError

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def resolve_device(name: str) -> torch.device:
    """The device of a `device` setting: auto (CUDA when there is one, else the CPU), cpu,
    cuda or cuda:N; refuses CUDA where none is available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RactError(f"setting device: expected auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RactError(f"setting device: {name} was asked for but no CUDA device is available")
    return torch.device(name)


def reuse_freed_memory() -> None:
    """Let glibc's malloc serve large blocks from its heap and keep freed memory for reuse.

    A batch's (B, n_items) tensors (40 MB on ML-20M) and the large layers' gradients (48 MB)
    are above glibc's mmap threshold, so by default each one is a fresh mapping whose pages
    fault in one by one and go back to the kernel when it is freed, every batch. On a 2-core
    VM that was ~30% of an actor step on ML-20M-shaped data (341 against 250 ms; see
    benchmarks/README.md). From the heap, the same pages are reused batch after batch. The
    process then keeps its peak memory until it exits, which a training or evaluation job
    does anyway. Called by `ract.train.train_stage` and `ract.evaluate.evaluate_to_frames`;
    does nothing where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)

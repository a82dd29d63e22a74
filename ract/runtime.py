"""Where and how long numeric jobs (training, evaluation) run: the device, and process
settings that change speed only, never results."""

from __future__ import annotations

import ctypes
import sys

import torch

from .errors import RactError

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's own


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


def free_memory_bytes() -> int | None:
    """Memory the kernel could give this process now without swapping (Linux's MemAvailable),
    or None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_budget(mem_mb: int) -> int:
    """Bytes a job may allocate: its memory request (Snakemake's mem_mb, MiB), or the memory
    free now where that is less (a laptop asked for more than it has)."""
    budget = int(mem_mb) * 2**20
    free = free_memory_bytes()
    return budget if free is None else min(budget, free)


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
    mallopt = _mallopt()
    if mallopt is None:
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def return_freed_memory(threshold: int = 1 << 20) -> None:
    """Give every block of `threshold` bytes or more a mapping of its own, returned to the
    kernel as soon as it is freed, so that resident memory follows the memory in use.

    By default glibc raises its mmap threshold, up to 32 MiB, each time such a block is freed,
    then serves blocks below it from its heap, which keeps what is freed in between: in an
    EASE lambda grid (benchmarks/ease_memory.py) that left the resident peak 20-45% above the
    memory in use, and above `ract.baselines.ease_fit_bytes`. Setting the threshold stops
    that. Undoes `reuse_freed_memory`. Called by `ract.baselines.select_ease_lambda`; does
    nothing where the C library is not glibc.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return
    mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    mallopt(_M_MMAP_THRESHOLD, threshold)
    mallopt(_M_TRIM_THRESHOLD, 2 * threshold)


def release_freed_memory() -> None:
    """Give the kernel back the whole pages of every free block in the heap (glibc's
    `malloc_trim`), keeping the blocks for reuse.

    Under `reuse_freed_memory` freed blocks stay resident. Training frees (500, n_items)
    blocks every batch and validation needs its own: where one phase's blocks do not fit in
    the other's, the heap grows past them while they stay resident, by an amount that
    depends on where each block landed. Called between training and validation
    (`ract.train`), it makes the resident peak that of the memory in use; the pages fault in
    again once per phase, not per batch. Does nothing where the C library is not glibc.
    """
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


def _mallopt():
    """glibc's mallopt, or None elsewhere."""
    return _glibc("mallopt")


def _glibc(function: str):
    """A function of glibc, or None where the C library is another."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), function)
    except (OSError, AttributeError):
        return None

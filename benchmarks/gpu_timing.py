"""Timing helpers of the GPU check: GPU syncs, peak memory, FLOP utilization against the GPU's
dense peak, and a Lightning callback timing batches after a warm-up."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from bench_pggan_speed import FlopCount

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s, by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def sync() -> None:
    """Wait for queued GPU work (a no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_tflops() -> float | None:
    """The GPU's dense bf16/fp16 peak from the table, or None (CPU or an unknown GPU)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def reset_memory() -> None:
    """Start a step's peak-memory count."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """Peak GPU memory allocated since the last reset, GiB (None on CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def utilization(flops: float, seconds: float) -> dict:
    """Achieved TFLOP/s and its share of the table's peak."""
    achieved = flops / seconds / 1e12 if seconds > 0 else 0.0
    peak = peak_tflops()
    return {
        "tflops": achieved,
        "peak_tflops": peak,
        "utilization": achieved / peak if peak else None,
    }


class Timed(pl.Callback):
    """Wall time of batches warmup..end (GPU synced at both ends) and FLOPs of batch `warmup`."""

    def __init__(self, warmup: int):
        self.warmup, self.flops, self._fc, self.start, self.end, self.n = warmup, 0, None, 0, 0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: D102
        if batch_idx == self.warmup:
            sync()
            self._fc = FlopCount()
            self._fc.__enter__()
        if batch_idx == self.warmup + 1:
            sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if self._fc is not None:
            self._fc.__exit__(None, None, None)
            self.flops, self._fc = self._fc.flops, None
        if batch_idx > self.warmup:
            sync()
            self.end, self.n = time.perf_counter(), self.n + 1

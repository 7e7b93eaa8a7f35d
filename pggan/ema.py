"""Exponential moving average of generator weights (used for sampling).

The decay is ramped, beta_t = min(beta, (1 + t) / (10 + t)) after t updates (the rule of
TensorFlow's ExponentialMovingAverage with num_updates): a run of a few hundred CPU steps would
otherwise still average mostly the random initialization (beta = 0.999 has a half-life of ~690
steps). The ramp reaches the paper's 0.999 after ~9,000 updates. Pass ``rampup=False`` for the
plain paper rule.
"""

from __future__ import annotations

import torch
from torch import nn


def decay_at(beta: float, n_updates: int, rampup: bool = True) -> float:
    """Decay for the update after ``n_updates`` previous ones."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"EMA beta must be in [0, 1), got {beta}")
    return min(beta, (1.0 + n_updates) / (10.0 + n_updates)) if rampup else beta


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """In place: ema_param <- beta * ema_param + (1 - beta) * param; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)

"""Progressive-growing GAN (Karras et al. 2018) for 1-channel images; knows tensors only."""

from __future__ import annotations

from pggan.ema import decay_at, update_ema
from pggan.loss import d_loss_wgan_gp, g_loss_wgan, gradient_penalty
from pggan.networks import Discriminator, Generator
from pggan.sample import fixed_latents, generate, make_grid_uint8, to_uint8
from pggan.schedule import Phase, Schedule


def __getattr__(name: str):
    """Import the Lightning module lazily (importing Lightning is slow)."""
    if name in ("PGGAN", "prepare_reals"):
        from pggan import module

        return getattr(module, name)
    raise AttributeError(f"module 'pggan' has no attribute {name!r}")


__all__ = [
    "PGGAN",
    "Discriminator",
    "Generator",
    "Phase",
    "Schedule",
    "d_loss_wgan_gp",
    "decay_at",
    "fixed_latents",
    "g_loss_wgan",
    "generate",
    "gradient_penalty",
    "make_grid_uint8",
    "prepare_reals",
    "to_uint8",
    "update_ema",
]

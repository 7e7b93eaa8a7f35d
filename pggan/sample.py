"""Deterministic sampling from a (EMA) generator to uint8 images, and image grids."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from pggan.networks import Generator


def fixed_latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """(n, latent_dim) standard normal latents that depend only on the seed (CPU generator)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=gen)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] floats to uint8 [0, 255] (clamped, rounded)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(
    G: Generator,
    n: int,
    level: int | None = None,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    batch: int = 64,
    alpha: float = 1.0,
) -> torch.Tensor:
    """n images (n, C, R, R) as uint8 on CPU; same seed and weights give the same images."""
    if n < 0 or batch < 1:
        raise ValueError(f"need n >= 0 and batch >= 1, got n={n}, batch={batch}")
    if labels is not None and labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} rows for {n} images")
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    z_all = fixed_latents(n, G.latent_dim, seed)
    out = []
    for start in range(0, n, batch):
        z = z_all[start : start + batch].to(device)
        y = None if labels is None else labels[start : start + batch].to(device).float()
        out.append(to_uint8(G(z, level, alpha, y)).cpu())
    G.train(was_training)
    if not out:
        size = 4 * 2 ** (G.n_levels - 1 if level is None else level)
        return torch.zeros(0, G.img_channels, size, size, dtype=torch.uint8)
    return torch.cat(out)


def make_grid_uint8(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile uint8 images (N, C, H, W) into one (C, H', W') uint8 image (grayscale stays 1 channel)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}"
        )
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=0)
    return grid[: images.shape[1]].contiguous()

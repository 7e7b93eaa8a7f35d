"""Filter pre-augmentation of a class's images with the config's filter bank (uint8 in, uint8 out)."""

from __future__ import annotations

import numpy as np
import torch

from filters import filter_bank


def bank_params(cfg: dict) -> dict:
    """Filter-bank arguments (names and per-filter keyword arguments) from the config's filters section."""
    f = cfg["filters"]
    per_filter = {
        "gaussian_blur": {"kernel_size": f["blur_kernel"]},
        "unsharp_mask": {"sigma": f["unsharp_sigma"], "amount": f["unsharp_amount"]},
        "minimum_filter": {"size": f["min_size"]},
    }
    names = tuple(f["names"])
    return {"names": names, **{k: v for k, v in per_filter.items() if k in names}}


def expand(images: np.ndarray, cfg: dict) -> tuple[np.ndarray, list[str]]:
    """Originals plus each filter's output (uint8, N·(1+F) images) and which filter made each."""
    images = np.require(images, requirements=["C", "W"])  # stores hand out read-only memmaps
    out, names = filter_bank(torch.from_numpy(images), **bank_params(cfg))
    return out.numpy(), list(names)

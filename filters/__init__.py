"""Batched filter pre-augmentation on (N, 1, H, W) tensors (uint8 or float, CPU or GPU)."""

from __future__ import annotations

from filters.bank import DEFAULT_FILTERS, FILTERS, filter_bank, get_filter
from filters.ops import (
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_params,
    minimum_filter,
    reflect_pad,
    unsharp_mask,
)

__all__ = [
    "DEFAULT_FILTERS",
    "FILTERS",
    "filter_bank",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_params",
    "get_filter",
    "minimum_filter",
    "reflect_pad",
    "unsharp_mask",
]

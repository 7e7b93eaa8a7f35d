"""Filter bank: expand a batch of images with filtered copies (the rare-class pre-augmentation)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from filters.ops import _check, gaussian_blur, minimum_filter, unsharp_mask

FILTERS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_blur": gaussian_blur,
    "unsharp_mask": unsharp_mask,
    "minimum_filter": minimum_filter,
}

DEFAULT_FILTERS: tuple[str, ...] = ("gaussian_blur", "unsharp_mask", "minimum_filter")


def get_filter(name: str) -> Callable[..., torch.Tensor]:
    """Look a filter up in FILTERS; ValueError naming the known ones if it is not there."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; known filters: {', '.join(sorted(FILTERS))}")
    return FILTERS[name]


def filter_bank(
    x: torch.Tensor,
    names: Sequence[str] = DEFAULT_FILTERS,
    **params: Mapping[str, Any],
) -> tuple[torch.Tensor, list[str]]:
    """Return (originals + each filter's output stacked along N in `names` order, row sources).

    For N input images and names (f1, f2, ...) the result has N * (1 + len(names)) rows: rows
    0..N-1 are the originals, rows N..2N-1 are f1 of them in the same order, and so on; the list
    says "original" or the filter name for each row. Per-filter keyword arguments are passed as
    ``filter_bank(x, gaussian_blur={"kernel_size": 5}, unsharp_mask={"sigma": 2.0, "amount": 1})``.
    """
    _check(x)
    if isinstance(names, str):
        names = (names,)
    funcs = [get_filter(name) for name in names]
    if len(set(names)) != len(names):
        raise ValueError(f"filter names repeat in {list(names)}; give each filter once")
    for key, value in params.items():
        if key not in names:
            raise ValueError(f"parameters given for {key!r}, which is not in names {list(names)}")
        if not isinstance(value, Mapping):
            raise ValueError(f"parameters for {key!r} must be a dict of keyword arguments")
    outputs = [x] + [f(x, **params.get(name, {})) for name, f in zip(names, funcs, strict=True)]
    sources = [source for source in ("original", *names) for _ in range(x.shape[0])]
    return torch.cat(outputs, dim=0), sources

"""Filter bank: expand a batch of images with filtered copies (the rare-class pre-augmentation)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from filters import _engine
from filters.ops import (
    _blur_spec,
    _check,
    _empty_images,
    _erode_spec,
    _sharpen_spec,
    gaussian_blur,
    minimum_filter,
    unsharp_mask,
)

FILTERS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_blur": gaussian_blur,
    "unsharp_mask": unsharp_mask,
    "minimum_filter": minimum_filter,
}

DEFAULT_FILTERS: tuple[str, ...] = ("gaussian_blur", "unsharp_mask", "minimum_filter")

# The built-in filters as engine specs: filter_bank computes these in one pass over the images.
_SPECS: dict[Callable[..., torch.Tensor], Callable[..., _engine.Spec]] = {
    gaussian_blur: lambda x, **kw: _blur_spec(**kw),
    unsharp_mask: _sharpen_spec,
    minimum_filter: lambda x, **kw: _erode_spec(**kw),
}


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
    n, c, h, w = x.shape
    out = _empty_images((n * (1 + len(names)), c, h, w), x)
    out[:n] = x
    rows = out.view(1 + len(names), n * c, h, w)[1:]
    # Built-in filters (as long as FILTERS still maps to them) share one pad and cast per chunk.
    makers = {k: _SPECS.get(f) for k, f in enumerate(funcs)}
    fused = [k for k, make in makers.items() if make is not None]
    specs = [makers[k](x, **params.get(names[k], {})) for k in fused]
    if fused == list(range(len(funcs))):
        _engine.run(x, specs, rows)
    else:
        for k, spec in zip(fused, specs, strict=True):
            _engine.run(x, [spec], rows[k : k + 1])
    for k, (name, f) in enumerate(zip(names, funcs, strict=True)):
        if k not in fused:
            rows[k] = f(x, **params.get(name, {})).reshape(n * c, h, w)
    sources = [source for source in ("original", *names) for _ in range(n)]
    return out, sources

"""Batched image filters on (N, C, H, W) tensors: Gaussian blur, unsharp mask, minimum filter.

Every op takes uint8 (0..255) or float tensors (e.g. in [0, 1] or [-1, 1]) on any device and
returns the input's dtype; uint8 results are rounded and clipped to 0..255. Channels are filtered
independently (the project uses C = 1). unsharp_mask clips as skimage does: uint8 to 0..255,
float to [-1, 1] if the tensor holds any negative value, else [0, 1]; pass ``value_range`` to fix
the range (e.g. for a [-1, 1] batch that may happen to have no negative value).

Border convention (all three ops): half-sample symmetric reflection, ``d c b a | a b c d | d c b a``,
i.e. scipy.ndimage ``mode="reflect"``, the mode ``skimage.filters.unsharp_mask`` hard-codes, and
OpenCV ``BORDER_REFLECT``. It is *not* torch ``F.pad(mode="reflect")`` (scipy ``"mirror"``,
``d c b | a b c d``), which skimage's unsharp mask cannot be asked to use; reflection is repeated
for pads wider than the image, as scipy does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Images per padded depthwise-conv call: keeps the working set in cache on CPU (blur of 1,000
# images at 128 px, one thread: ~0.1 s in chunks of 16..128 vs ~0.5 s in one call).
_CHUNK = 64


def _check(x: torch.Tensor) -> None:
    """Raise ValueError unless x is a 4-D uint8 or floating tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (N, C, H, W) tensor, got {shape}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"expected a uint8 or floating tensor, got dtype {x.dtype}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype: float32/float64 stay as they are, uint8 and half types use float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _restore(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float result back to the input dtype (uint8: round, clip to 0..255; in place)."""
    if dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(dtype)


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices of a length-n axis padded by symmetric reflection (scipy "reflect")."""
    i = torch.arange(-before, n + after, device=device).remainder(2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _reflect_pad_axis(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Pad one axis by symmetric reflection: flipped edge slices, or a gather for wide pads."""
    n = x.shape[dim]
    if before == 0 and after == 0:
        return x
    if before > n or after > n:
        return x.index_select(dim, _reflect_index(n, before, after, x.device))
    head = x.narrow(dim, 0, before).flip(dim)
    tail = x.narrow(dim, n - after, after).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two axes by half-sample symmetric reflection (scipy ``mode="reflect"``)."""
    return _reflect_pad_axis(_reflect_pad_axis(x, -2, top, bottom), -1, left, right)


def gaussian_params(sigma: float | None, kernel_size: int | None) -> tuple[float, int]:
    """Resolve (sigma, radius): OpenCV's sigma rule from a size, scipy's truncate=4 from a sigma."""
    if sigma is None and kernel_size is None:
        kernel_size = 5
    if kernel_size is not None:
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        radius = (int(kernel_size) - 1) // 2
        if sigma is None:
            sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if kernel_size is None:
        radius = int(4.0 * sigma + 0.5)
    return float(sigma), radius


def gaussian_kernel1d(
    sigma: float,
    radius: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Normalized 1-D Gaussian taps exp(-t^2 / 2 sigma^2), t = -radius..radius."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _by_chunks(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply fn to slices of _CHUNK images and gather the results (same dtype as x)."""
    if x.shape[0] == 0:
        return x.clone()
    if x.shape[0] <= _CHUNK:
        return fn(x)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], _CHUNK):
        out[start : start + _CHUNK] = fn(x[start : start + _CHUNK])
    return out


def _blur_float(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Blur (N, C, H, W) into a new float tensor: reflect pad, then two depthwise conv passes."""
    n, c, h, w = x.shape
    dtype = _compute_dtype(x.dtype)
    if radius == 0:
        return x.to(dtype, copy=True)
    taps = gaussian_kernel1d(sigma, radius, dtype, x.device)
    k = taps.numel()
    # Pad before casting: for uint8 the padded copy is 4x smaller.
    y = reflect_pad(x, radius, radius, radius, radius).to(dtype)
    y = y.reshape(1, n * c, h + 2 * radius, w + 2 * radius)
    y = F.conv2d(y, taps.view(1, 1, k, 1).expand(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(y, taps.view(1, 1, 1, k).expand(n * c, 1, 1, k), groups=n * c)
    return y.view(n, c, h, w)


def gaussian_blur(
    x: torch.Tensor, sigma: float | None = None, kernel_size: int | None = None
) -> torch.Tensor:
    """Separable Gaussian blur (default 5x5, sigma 1.1 as cv2.GaussianBlur(img, (5, 5), 0))."""
    _check(x)
    sigma, radius = gaussian_params(sigma, kernel_size)
    return _by_chunks(x, lambda part: _restore(_blur_float(part, sigma, radius), x.dtype))


def _value_range(x: torch.Tensor) -> tuple[float, float]:
    """Clip range as skimage infers it: uint8 0..255; float [-1, 1] if any value < 0, else [0, 1]."""
    if x.dtype == torch.uint8:
        return 0.0, 255.0
    return (-1.0 if bool((x < 0).any()) else 0.0), 1.0


def unsharp_mask(
    x: torch.Tensor,
    sigma: float = 2.0,
    amount: float = 1.0,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Sharpen as ``x + amount * (x - blur(x, sigma))`` clipped to the range (skimage's formula)."""
    _check(x)
    sigma, radius = gaussian_params(sigma, None)
    lo, hi = _value_range(x) if value_range is None else value_range

    def sharpen(part: torch.Tensor) -> torch.Tensor:
        y = _blur_float(part, sigma, radius)
        y.mul_(-amount).add_(part.to(y.dtype), alpha=1.0 + amount).clamp_(lo, hi)
        return _restore(y, x.dtype)

    return _by_chunks(x, sharpen)


def minimum_filter(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Grayscale erosion: minimum over a size x size window centred as scipy centres it."""
    _check(x)
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    if size == 1:
        return x.clone()
    before, after = size // 2, size - 1 - size // 2
    h, w = x.shape[-2:]
    # Separable running minimum over shifted views: exact, any dtype and device, no casts.
    padded = reflect_pad(x, before, after, before, after)
    rows = padded[..., :h, :]
    for shift in range(1, size):
        rows = torch.minimum(rows, padded[..., shift : shift + h, :])
    out = rows[..., :w]
    for shift in range(1, size):
        out = torch.minimum(out, rows[..., shift : shift + w])
    return out

"""PGGAN building blocks: equalized-lr layers, pixel norm, minibatch stddev, resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
HE_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the paper's slope 0.2."""
    return F.leaky_relu(x, LRELU_SLOPE)


# How images and features change resolution: "nearest" is the paper's (nearest-neighbour 2x up,
# 2x2 box average down); "lowpass" filters both ways with the binomial [1, 3, 3, 1] (StyleGAN,
# Karras et al. 2019), which keeps the generator from painting pixel-scale blocks.
RESAMPLE = ("nearest", "lowpass")


def check_resample(resample: str) -> str:
    """A resample mode's name, or a ValueError listing the modes."""
    if resample not in RESAMPLE:
        raise ValueError(f"resample {resample!r}: use one of {', '.join(RESAMPLE)}")
    return resample


def upsample(x: torch.Tensor, resample: str = "nearest") -> torch.Tensor:
    """2x upsampling: nearest-neighbour, or "lowpass" (bilinear, half-pixel centres: each axis the
    transposed [1, 3, 3, 1] / 4 filter, edges clamped)."""
    if check_resample(resample) == "lowpass":
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample(x: torch.Tensor, factor: int = 2, resample: str = "nearest") -> torch.Tensor:
    """Downsampling by an integer factor: box filter (average pool), or "lowpass" (per 2x step,
    each axis the [1, 3, 3, 1] / 8 filter at stride 2, edges replicated: two 2-tap averages at
    stride 1, then one at stride 2, [1, 1] * [1, 1] * [1, 1] = [1, 3, 3, 1]; average pools, where
    bf16 has no antialiased interpolation on CPU). The result keeps the input's dtype, also under
    autocast (whose replicate padding runs in fp32)."""
    if check_resample(resample) != "lowpass":
        return F.avg_pool2d(x, factor) if factor > 1 else x
    dtype = x.dtype
    while factor > 1:
        if factor % 2:
            raise ValueError(f"lowpass downsampling needs a power-of-2 factor, got {factor}")
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        x = F.avg_pool2d(F.avg_pool2d(F.avg_pool2d(x, 2, stride=1), 2, stride=1), 2)
        factor //= 2
    return x.to(dtype)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize each pixel's feature vector (dim 1) to unit root-mean-square.

    Where dim 1 is innermost in memory (2-D, or 4-D channels_last) this is PyTorch's fused
    rms_norm over that dim: the same formula x / sqrt(mean(x^2) + eps), about 2x faster on CPU.
    """
    if x.ndim == 2:
        return F.rms_norm(x, (x.shape[1],), eps=eps)
    if x.ndim == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return F.rms_norm(x.permute(0, 2, 3, 1), (x.shape[1],), eps=eps).permute(0, 3, 1, 2)
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class EqualLinear(nn.Module):
    """Dense layer with equalized learning rate: w ~ N(0,1) scaled by gain/sqrt(fan_in) at runtime."""

    def __init__(self, in_dim: int, out_dim: int, gain: float = HE_GAIN, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.scale = gain / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the scaled affine map."""
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualConv2d(nn.Module):
    """Square 'same' convolution with equalized learning rate.

    With ``up=True`` it computes conv(upsample_nearest(x)) exactly, but as one stride-2 transposed
    convolution with a 4x4 kernel built from the 3x3 one (2.25x fewer FLOPs, same function).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, gain: float = HE_GAIN, up: bool = False
    ):
        super().__init__()
        if up and kernel != 3:
            raise ValueError(f"fused upsampling needs a 3x3 kernel, got {kernel}")
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = gain / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve (after nearest 2x upsampling when ``up``)."""
        w = self.weight * self.scale
        if not self.up:
            return F.conv2d(x, w, self.bias, padding=self.padding)
        return F.conv_transpose2d(x, upsample_kernel(w), self.bias, stride=2, padding=1)


def upsample_kernel(w: torch.Tensor) -> torch.Tensor:
    """4x4 transposed-conv kernel (in, out, 4, 4) equal to nearest-2x-upsample then 3x3 conv w.

    Along each axis the taps are [w2, w1+w2, w0+w1, w0]: output row 2i sees source rows i-1, i
    through w0 and w1+w2, output row 2i+1 sees rows i, i+1 through w0+w1 and w2.
    """
    w = F.pad(w, (1, 1, 1, 1))
    w = w[:, :, 1:, :] + w[:, :, :-1, :]
    w = w[:, :, :, 1:] + w[:, :, :, :-1]
    return w.flip(2, 3).transpose(0, 1)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    """Largest divisor of n that is <= cap."""
    return next(g for g in range(min(cap, n), 0, -1) if n % g == 0)


class MinibatchStd(nn.Module):
    """Append one feature map: the mean over features of the per-group stddev of the batch.

    Groups are contiguous runs of ``group_size`` samples (the largest divisor of the sub-batch
    size not above ``group_size``). ``n_segments`` splits the batch into equal independent
    sub-batches (e.g. reals and fakes evaluated in one pass) whose groups never mix.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8):
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor, n_segments: int = 1) -> torch.Tensor:
        """Return x with the stddev feature map concatenated on dim 1."""
        n, c, h, w = x.shape
        if n % n_segments:
            raise ValueError(f"batch of {n} does not split into {n_segments} equal segments")
        g = _largest_divisor_at_most(n // n_segments, self.group_size)
        # fp32 even under bf16 autocast: x - mean cancels the leading bits of nearly equal features,
        # and bf16 keeps 8 of them, so the spread D sees (its cue against collapse) would be noise
        y = x.float().reshape(n // g, g, c, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        y = (y + self.eps).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
        y = y.repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

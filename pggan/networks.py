"""Progressive-growing generator and discriminator (Karras et al. 2018), 1 image channel native.

Level 0 is 4 px, level k is 4 * 2**k px. ``channels[k]`` is the feature width at level k.
``alpha`` in [0, 1] fades level k in over level k-1 (1 = fully grown).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pggan.layers import (
    HE_GAIN,
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    check_resample,
    downsample,
    lrelu,
    pixel_norm,
    upsample,
)
from pggan.schedule import levels


def check_architecture(resolution: int, channels: Sequence[int]) -> int:
    """Validate resolution/channels and return the number of levels (log2(resolution) - 1)."""
    n_levels = levels(resolution)
    if len(channels) != n_levels:
        raise ValueError(
            f"channels needs one width per resolution 4..{resolution} ({n_levels} values), "
            f"got {len(channels)}: {list(channels)}"
        )
    if any(c < 1 for c in channels):
        raise ValueError(f"channel widths must be positive, got {list(channels)}")
    return n_levels


def _check_level(level: int | None, n_levels: int, alpha: float) -> int:
    """Resolve a default level and validate level/alpha."""
    level = n_levels - 1 if level is None else level
    if not 0 <= level < n_levels:
        raise ValueError(f"level must be in [0, {n_levels - 1}], got {level}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return level


def _check_labels(labels: torch.Tensor | None, label_dim: int, n: int) -> None:
    """Labels must be given exactly when the network is conditional, one row per sample."""
    if label_dim == 0 and labels is not None:
        raise ValueError("labels given to an unconditional network (label_dim=0)")
    if label_dim > 0 and (labels is None or labels.shape != (n, label_dim)):
        got = None if labels is None else tuple(labels.shape)
        raise ValueError(f"conditional network needs labels of shape ({n}, {label_dim}), got {got}")


class GBlock(nn.Module):
    """Upsample, conv3x3, conv3x3; each conv followed by leaky ReLU and pixel norm.

    Nearest upsampling is fused into the first conv (``fused_up``); lowpass upsampling never is.
    """

    def __init__(self, in_ch: int, out_ch: int, fused_up: bool = True, resample: str = "nearest"):
        super().__init__()
        self.resample = check_resample(resample)
        self.fused_up = fused_up and resample == "nearest"
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, up=self.fused_up)
        self.conv2 = EqualConv2d(out_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the resolution."""
        x = self.conv1(x if self.fused_up else upsample(x, self.resample))
        x = pixel_norm(lrelu(x))
        return pixel_norm(lrelu(self.conv2(x)))


class Generator(nn.Module):
    """Latent (+ optional multi-hot labels) -> image in [-1, 1]-ish at 4 * 2**level px."""

    def __init__(
        self,
        resolution: int = 64,
        channels: Sequence[int] = (128, 128, 128, 64, 32),
        latent_dim: int = 128,
        label_dim: int = 0,
        img_channels: int = 1,
        fused_up: bool = True,
        resample: str = "nearest",
    ):
        super().__init__()
        self.n_levels = check_architecture(resolution, channels)
        self.resolution, self.latent_dim, self.label_dim = resolution, latent_dim, label_dim
        self.img_channels, self.resample = img_channels, check_resample(resample)
        c0 = channels[0]
        # The 4x4 "deconv" of the paper is a dense layer to 4x4xC (official gain sqrt(2)/4).
        self.dense = EqualLinear(latent_dim + label_dim, c0 * 16, gain=HE_GAIN / 4)
        self.conv0 = EqualConv2d(c0, c0, 3)
        self.blocks = nn.ModuleList(
            GBlock(channels[k - 1], channels[k], fused_up, resample)
            for k in range(1, self.n_levels)
        )
        self.to_rgb = nn.ModuleList(EqualConv2d(c, img_channels, 1, gain=1.0) for c in channels)

    def forward(
        self,
        z: torch.Tensor,
        level: int | None = None,
        alpha: float = 1.0,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate (N, img_channels, 4 * 2**level, 4 * 2**level) images."""
        level = _check_level(level, self.n_levels, alpha)
        _check_labels(labels, self.label_dim, z.shape[0])
        x = pixel_norm(z)
        if labels is not None:
            x = torch.cat([x, labels.to(x.dtype)], dim=1)
        x = self.dense(x).reshape(z.shape[0], -1, 4, 4)
        x = pixel_norm(lrelu(x))
        h = pixel_norm(lrelu(self.conv0(x)))
        h_prev = h
        for block in self.blocks[:level]:
            h_prev, h = h, block(h)
        out = self.to_rgb[level](h)
        if level > 0 and alpha < 1.0:
            coarse = upsample(self.to_rgb[level - 1](h_prev), self.resample)
            out = torch.lerp(coarse.to(out.dtype), out, alpha)  # autocast may resample in fp32
        return out


class DBlock(nn.Module):
    """conv3x3, conv3x3 (to the lower level's width), each with leaky ReLU, then 2x downsampling."""

    def __init__(self, in_ch: int, out_ch: int, resample: str = "nearest"):
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3)
        self.resample = check_resample(resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve the resolution."""
        return downsample(lrelu(self.conv2(lrelu(self.conv1(x)))), resample=self.resample)


class Discriminator(nn.Module):
    """Image (+ optional labels, projection term) -> one critic score per sample, shape (N,)."""

    def __init__(
        self,
        resolution: int = 64,
        channels: Sequence[int] = (128, 128, 128, 64, 32),
        label_dim: int = 0,
        img_channels: int = 1,
        mbstd_group: int = 4,
        resample: str = "nearest",
    ):
        super().__init__()
        self.n_levels = check_architecture(resolution, channels)
        self.resolution, self.label_dim, self.img_channels = resolution, label_dim, img_channels
        self.resample = check_resample(resample)
        c0 = channels[0]
        self.from_rgb = nn.ModuleList(EqualConv2d(img_channels, c, 1) for c in channels)
        # blocks[k - 1] takes level k (channels[k]) down to level k - 1 (channels[k - 1]).
        self.blocks = nn.ModuleList(
            DBlock(channels[k], channels[k - 1], resample) for k in range(1, self.n_levels)
        )
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv_last = EqualConv2d(c0 + 1, c0, 3)
        self.dense = EqualLinear(c0 * 16, c0)
        self.out = EqualLinear(c0, 1, gain=1.0)
        self.embed = EqualLinear(label_dim, c0, gain=1.0, bias=False) if label_dim else None

    def forward(
        self,
        x: torch.Tensor,
        level: int | None = None,
        alpha: float = 1.0,
        labels: torch.Tensor | None = None,
        n_segments: int = 1,
    ) -> torch.Tensor:
        """Score images; ``n_segments`` equal sub-batches keep separate minibatch-stddev groups."""
        level = _check_level(level, self.n_levels, alpha)
        size = 4 * 2**level
        if x.ndim != 4 or x.shape[1] != self.img_channels or x.shape[-2:] != (size, size):
            raise ValueError(
                f"level {level} expects (N, {self.img_channels}, {size}, {size}) images, "
                f"got {tuple(x.shape)}"
            )
        _check_labels(labels, self.label_dim, x.shape[0])
        h = lrelu(self.from_rgb[level](x))
        if level > 0:
            h = self.blocks[level - 1](h)
            if alpha < 1.0:
                low = lrelu(self.from_rgb[level - 1](downsample(x, resample=self.resample)))
                h = torch.lerp(low.to(h.dtype), h, alpha)
        for k in range(level - 1, 0, -1):
            h = self.blocks[k - 1](h)
        h = lrelu(self.conv_last(self.mbstd(h, n_segments)))
        h = lrelu(self.dense(h.flatten(1)))
        score = self.out(h).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(labels.to(h.dtype)) * h).sum(dim=1)
        return score

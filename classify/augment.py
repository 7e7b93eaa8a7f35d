"""The `standard` augmentation arm: per-sample flip, rotation and resized crop in one warp.

Each sample draws its own parameters from a seeded CPU generator (same seed → same batch
augmentations on any device); the warp is one `affine_grid`/`grid_sample` on the batch's device.
Horizontal flip is off by default: on a chest X-ray a flip moves the heart to the right, which
no real frontal film shows (situs inversus aside), so a flip teaches the model a false anatomy.
Pixels warped in from outside the image are 0 (black), so apply it to [0, 1] images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class StandardAugment:
    """Random horizontal flip (p=`hflip`), rotation in ±`degrees`, square crop of area `scale`."""

    def __init__(
        self,
        hflip: float = 0.0,
        degrees: float = 10.0,
        scale: tuple[float, float] = (0.8, 1.0),
        enabled: bool = True,
        seed: int = 0,
    ):
        lo, hi = scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip probability must be in [0, 1], got {hflip}")
        if degrees < 0:
            raise ValueError(f"degrees must be >= 0, got {degrees}")
        self.hflip, self.degrees, self.scale = float(hflip), float(degrees), (float(lo), float(hi))
        self.enabled = enabled
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream (e.g. with seed + rank under DDP)."""
        self.seed = seed
        self.generator.manual_seed(seed)

    def sample_params(self, n: int) -> dict[str, torch.Tensor]:
        """Per-sample parameters on CPU: angle (degrees), side (crop side / image side), tx, ty, flip."""
        g = self.generator
        u = torch.rand(n, 5, generator=g, dtype=torch.float64)
        angle = (2 * u[:, 0] - 1) * self.degrees
        lo, hi = self.scale
        side = torch.sqrt(lo + (hi - lo) * u[:, 1])  # crop area fraction in [lo, hi]
        room = 1.0 - side  # the crop centre may move this far (normalized coords) and stay inside
        return {
            "angle": angle,
            "side": side,
            "tx": (2 * u[:, 2] - 1) * room,
            "ty": (2 * u[:, 3] - 1) * room,
            "flip": u[:, 4] < self.hflip,
        }

    @staticmethod
    def theta(params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Affine matrices (N, 2, 3) mapping output to input coords; positive angle = CCW on screen."""
        a = params["angle"] * (math.pi / 180.0)
        s = params["side"]
        f = 1.0 - 2.0 * params["flip"].to(s.dtype)  # -1 mirrors the output's x axis
        cos, sin = torch.cos(a) * s, torch.sin(a) * s
        row0 = torch.stack([cos * f, -sin, params["tx"]], dim=1)
        row1 = torch.stack([sin * f, cos, params["ty"]], dim=1)
        return torch.stack([row0, row1], dim=1)

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Warp a float batch (N, C, H, W) with given parameters."""
        theta = self.theta(params).to(device=x.device, dtype=torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(
            x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out.to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augmented copy of a float batch (N, C, H, W); `x` itself when disabled."""
        if not self.enabled or x.shape[0] == 0:
            return x
        if not x.is_floating_point():
            raise ValueError(f"augment float images in [0, 1], not {x.dtype}")
        return self.apply(x, self.sample_params(x.shape[0]))

    def __repr__(self) -> str:
        return (
            f"StandardAugment(hflip={self.hflip}, degrees={self.degrees}, scale={self.scale}, "
            f"enabled={self.enabled}, seed={self.seed})"
        )

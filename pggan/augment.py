"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020) with ADA's
adaptive strength (Karras et al. 2020); tensors only.

Images are (N, C, H, W) floats in [-1, 1]. Reals and fakes both pass through the same random
policy before D (each sample its own draw), and every op is differentiable, so G learns through
it; the discriminator never sees an un-augmented image, which is what keeps ~50 real images from
being memorized. Ops (each applied per sample with probability p, always in this order, whatever
the order they are named in):

- ``color``: brightness + U(-0.5, 0.5) and contrast × U(0.5, 1.5) around the image mean
  (DiffAugment's ranges on [-1, 1]); no saturation, the images are 1-channel.
- ``affine``: rotation U(-10°, 10°) and isotropic scale U(0.9, 1.1) about the centre, bilinear.
- ``translation``: an integer shift of up to 1/8 of the side in x and y (nearest sampling, so no blur).
- ``cutout``: one square of half the side (a quarter of the area) set to -1, black: an X-ray's
  background (air, collimation), so a cut-out reads as a missing region, not a grey sticker.

Geometric ops fill uncovered pixels from the nearest edge (``padding_mode="border"``): no
artificial bands. No flips: a flipped chest X-ray moves the heart. Randomness comes only from the
``torch.Generator`` given with each call; kornia's parameter sampling (which draws from the global
CPU RNG) runs inside ``torch.random.fork_rng`` seeded from that generator, so the global RNG is
untouched and a resumed run replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # kornia loads only when a policy names one of its ops (a GAN without
    import kornia.augmentation as K  # augmentation, e.g. on a GPU machine without it, needs none)

POLICIES = ("color", "affine", "translation", "cutout")  # the order the ops run in
OFF = ("", "none")


def parse_policy(policy: str) -> tuple[str, ...]:
    """The op names of a comma-separated policy in run order; "" or "none" is no augmentation."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in POLICIES:
            raise ValueError(
                f"unknown augmentation {name!r}; valid: {', '.join(POLICIES)} "
                "(comma-separated), or none"
            )
    return tuple(name for name in POLICIES if name in names)


def check_p(p: float) -> float:
    """`p` as a float if it is a probability, else a ValueError."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"augmentation probability p must be in [0, 1], not {p!r}")
    return float(p)


KORNIA_OPS = ("affine", "translation", "cutout")


def _kornia_ops() -> dict[str, K.AugmentationBase2D]:
    """The kornia modules behind the geometric ops and cutout (kept on the CPU: they sample there)."""
    import kornia.augmentation as K

    return {
        "affine": K.RandomAffine(degrees=10.0, scale=(0.9, 1.1), padding_mode="border"),
        "translation": K.RandomTranslate(
            (-0.125, 0.125), (-0.125, 0.125), resample="nearest", padding_mode="border"
        ),
        # kornia's eraser fills with a value in [0, 1]: erase x + 1 with 0, i.e. x with -1.
        "cutout": K.RandomErasing(scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0),
    }


def color(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness and contrast, per sample with probability p.

    Written here, not kornia: kornia's brightness/contrast ops clamp to [0, 1] (wrong range, and a
    clamp stops gradients to saturated pixels) and its unclamped contrast scales around 0, not the mean.
    """
    n, dev = x.shape[0], generator.device
    on = (torch.rand(n, device=dev, generator=generator) < p).to(x.dtype)
    bright = (torch.rand(n, device=dev, generator=generator) - 0.5) * on
    contrast = 1.0 + (torch.rand(n, device=dev, generator=generator) - 0.5) * on
    shape = (n, 1, 1, 1)
    bright, contrast = (v.view(shape).to(x.device, x.dtype) for v in (bright, contrast))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + bright


class DiffAugment:
    """A policy's ops, each applied per sample with probability p; ``aug(x, p, generator)``."""

    def __init__(self, policy: str = ""):
        self.names = parse_policy(policy)
        ops = _kornia_ops() if set(self.names) & set(KORNIA_OPS) else {}
        self.ops: dict[str, K.AugmentationBase2D] = {n: ops[n] for n in self.names if n in ops}

    def __bool__(self) -> bool:
        """Whether the policy names any op."""
        return bool(self.names)

    def __call__(self, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """`x` augmented (a new tensor, differentiable), or `x` itself when p == 0 or no op is named."""
        p = check_p(p)
        if p == 0.0 or not self.names:
            return x
        for name in self.names:
            if name == "color":
                x = color(x, p, generator)
            elif name == "cutout":
                x = self._kornia(self.ops[name], x + 1.0, p, generator) - 1.0
            else:
                x = self._kornia(self.ops[name], x, p, generator)
        return x

    @staticmethod
    def _kornia(
        op: Callable[[torch.Tensor], torch.Tensor] | K.AugmentationBase2D,
        x: torch.Tensor,
        p: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Run a kornia op with its parameter draws seeded from `generator`; the global RNG untouched."""
        seed = int(torch.randint(2**62, (1,), device=generator.device, generator=generator))
        with torch.random.fork_rng(devices=[]):  # kornia samples on the CPU (the ops never move)
            torch.random.default_generator.manual_seed(seed)
            op.p = p
            return op(x)


class AdaptiveP:
    """ADA's heuristic for p: every `interval` steps, r_t = the mean over those steps of the
    per-step overfitting signal; p += sign(r_t - target) * (images in the interval) /
    (speed_kimg * 1000), clamped to [0, 1].

    ADA's signal is E[sign(D(real))] under a logistic loss, whose logits are centred at 0 by
    construction. A WGAN-GP critic's scores have no fixed origin (PGGAN's drift term is too weak
    to pin them: on 52 Kermany viral images E[sign D(real)] stayed under the target and p under
    0.1 for 9 kimg), so
    the module feeds E[sign(D(real) - mean D(fake))] (pggan.loss): the share of reals the critic
    ranks above the batch's fakes, rescaled to [-1, 1]. Near 1 the critic tells every real from
    the fakes (overfitting its few reals, or far ahead of G), so p rises; below `target` it falls.
    ``state_dict`` holds p and the partial interval, for an exact resume.
    """

    def __init__(
        self, p: float = 0.0, target: float = 0.6, speed_kimg: float = 10.0, interval: int = 4
    ):
        if not 0.0 < target < 1.0:
            raise ValueError(f"adaptive augmentation target must be in (0, 1), not {target!r}")
        if not speed_kimg > 0 or interval < 1:
            raise ValueError(f"need speed_kimg > 0 and interval ≥ 1, not {speed_kimg}, {interval}")
        self.p, self.target = check_p(p), target
        self.speed_kimg, self.interval = speed_kimg, interval
        self.signs: float | torch.Tensor = 0.0  # sum of per-step E[sign(D(real))] this interval
        self.steps = 0
        self.images = 0

    def update(
        self,
        real_sign: torch.Tensor,
        images: int,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> float:
        """Add one step's mean sign of D(real) and its image count; adjust p at the interval's end.

        `reduce` (e.g. a mean over DDP processes) is applied to r_t before the one host sync per
        interval; returns p for the next step.
        """
        self.signs = self.signs + real_sign.detach().float()
        self.steps += 1
        self.images += images
        if self.steps < self.interval:
            return self.p
        r_t = torch.as_tensor(self.signs) / self.steps
        r_t = float(reduce(r_t) if reduce is not None else r_t)
        direction = (r_t > self.target) - (r_t < self.target)
        step = direction * self.images / (self.speed_kimg * 1000.0)
        self.p = min(max(self.p + step, 0.0), 1.0)
        self.signs, self.steps, self.images = 0.0, 0, 0
        return self.p

    def state_dict(self) -> dict:
        """p and the partial interval (plain numbers)."""
        return {"p": self.p, "signs": float(self.signs), "steps": self.steps, "images": self.images}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        self.p, self.signs = float(state["p"]), float(state["signs"])
        self.steps, self.images = int(state["steps"]), int(state["images"])

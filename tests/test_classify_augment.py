"""Standard augmentation: shape, identity, determinism, and geometry checked against exact warps."""

from __future__ import annotations

import pytest
import torch

from classify.augment import StandardAugment


def _params(n: int, angle: float = 0.0, side: float = 1.0, flip: bool = False) -> dict:
    d = torch.float64
    return {
        "angle": torch.full((n,), angle, dtype=d),
        "side": torch.full((n,), side, dtype=d),
        "tx": torch.zeros(n, dtype=d),
        "ty": torch.zeros(n, dtype=d),
        "flip": torch.full((n,), flip),
    }


def test_shape_identity_and_disabled() -> None:
    x = torch.rand(4, 1, 16, 16)
    aug = StandardAugment(seed=1)
    assert aug(x).shape == x.shape and aug(x).dtype == x.dtype
    assert StandardAugment(enabled=False)(x) is x
    still = StandardAugment(hflip=0.0, degrees=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(still(x), x, rtol=0, atol=1e-6)
    assert StandardAugment().hflip == 0.0  # no flips by default for chest X-rays


def test_deterministic_by_seed_and_per_sample() -> None:
    x = torch.rand(1, 1, 16, 16).repeat(6, 1, 1, 1)
    a = StandardAugment(hflip=0.5, seed=7)(x)
    b = StandardAugment(hflip=0.5, seed=7)(x)
    c = StandardAugment(hflip=0.5, seed=8)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # each sample draws its own parameters


def test_rotation_really_rotates() -> None:
    x = torch.rand(2, 1, 9, 9)
    aug = StandardAugment()
    turned = aug.apply(x, _params(2, angle=90.0))
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-5)
    mirrored = aug.apply(x, _params(2, flip=True))
    torch.testing.assert_close(mirrored, x.flip(-1), rtol=0, atol=1e-5)
    params = StandardAugment(degrees=10.0, seed=3).sample_params(200)
    assert params["angle"].abs().max() <= 10.0 and params["angle"].std() > 4.0
    assert not params["flip"].any()


def test_crop_zooms_by_the_side_fraction() -> None:
    ramp = torch.arange(32, dtype=torch.float32).repeat(32, 1)[None, None]  # value = column
    zoomed = StandardAugment().apply(ramp, _params(1, side=0.5))
    slope = (zoomed[0, 0, 16, 9:23].diff()).mean()
    assert slope.item() == pytest.approx(0.5, abs=1e-4)
    params = StandardAugment(scale=(0.8, 1.0), seed=0).sample_params(500)
    area = params["side"] ** 2
    assert area.min() >= 0.8 - 1e-9 and area.max() <= 1.0
    assert (params["tx"].abs() <= 1 - params["side"] + 1e-12).all()


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="crop scale"):
        StandardAugment(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="hflip"):
        StandardAugment(hflip=1.5)

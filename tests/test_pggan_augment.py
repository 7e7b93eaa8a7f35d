"""Differentiable augmentation for D (DiffAugment) and ADA's adaptive p."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO

from pggan.augment import POLICIES, AdaptiveP, DiffAugment, check_p, parse_policy


def images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random images in [-1, 1] with some structure (a bright square), (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 1.2 - 1
    x[:, :, 4:10, 5:12] = 0.9
    return x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_p_zero_or_no_policy_is_the_identity():
    x = images()
    assert DiffAugment("translation,cutout,color,affine")(x, 0.0, gen()) is x
    assert DiffAugment("")(x, 1.0, gen()) is x and DiffAugment("none")(x, 1.0, gen()) is x
    assert not DiffAugment("none") and DiffAugment("cutout")


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_changes_images_keeps_shape_and_passes_gradients(policy):
    x = images().requires_grad_(True)
    y = DiffAugment(policy)(x, 1.0, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    changed = (y - x).detach().flatten(1).abs().amax(dim=1) > 1e-4
    assert changed.float().mean() >= 0.75, (policy, changed)  # a rare draw may be a 0 px shift
    if policy != "color":  # geometric ops and cutout keep the range; color is unclamped
        assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert grad.abs().sum() > 0


def test_cutout_is_a_black_half_side_square():
    x = torch.ones(4, 1, 16, 16)
    y = DiffAugment("cutout")(x, 1.0, gen())
    assert ((y == -1).sum(dim=(1, 2, 3)) == 64).all()  # 8 x 8 of 16 x 16
    assert ((y == -1) | (y == 1)).all()


def test_all_policies_together_reproducible_and_global_rng_untouched():
    x = images(16)
    aug = DiffAugment("translation,cutout,color,affine")
    state = torch.get_rng_state()
    a, b = aug(x, 0.7, gen(3)), aug(x, 0.7, gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, aug(x, 0.7, gen(4)))
    assert torch.equal(
        DiffAugment("cutout,color")(x, 0.7, gen(1)), DiffAugment("color,cutout")(x, 0.7, gen(1))
    )


def test_each_sample_is_augmented_with_probability_p():
    x = images(400, 16)
    y = DiffAugment("cutout")(x, 0.25, gen())
    changed = ((y - x).flatten(1).abs().amax(dim=1) > 0).float().mean().item()
    assert 0.17 < changed < 0.33, changed


def test_bad_names_and_probabilities_are_value_errors():
    with pytest.raises(ValueError, match=r"'flip'.*translation"):
        parse_policy("translation,flip")
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            check_p(p)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            DiffAugment("color")(images(), p, gen())
    assert parse_policy(" cutout , translation ") == ("translation", "cutout")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        AdaptiveP(target=1.0)


def test_adaptive_p_rises_when_d_is_sure_of_the_reals_falls_otherwise_and_clamps():
    ada = AdaptiveP(p=0.0, target=0.6, speed_kimg=0.1, interval=4)
    ones = torch.tensor(1.0)
    assert [ada.update(ones, 10) for _ in range(3)] == [0.0] * 3  # within the interval: no change
    assert ada.update(ones, 10) == pytest.approx(40 / 100)  # sign(1 - 0.6) * 40 images / 100
    for _ in range(8):
        ada.update(ones, 10)
    assert ada.p == 1.0  # clamped
    for _ in range(4):
        ada.update(-ones, 10)
    assert ada.p == pytest.approx(0.6)
    for _ in range(40):
        ada.update(-ones, 10)
    assert ada.p == 0.0
    # a mean over processes is applied to r_t before the decision
    ada = AdaptiveP(p=0.5, speed_kimg=0.1, interval=1)
    assert ada.update(ones, 10, reduce=lambda t: t - 2) == pytest.approx(0.4)


def test_adaptive_p_state_round_trip_mid_interval():
    a = AdaptiveP(p=0.3, speed_kimg=1.0)
    for s in (0.5, 1.0):
        a.update(torch.tensor(s), 16)
    b = AdaptiveP(p=0.0, speed_kimg=1.0)
    b.load_state_dict(a.state_dict())
    for s in (0.25, 1.0):
        assert a.update(torch.tensor(s), 16) == b.update(torch.tensor(s), 16)
    assert a.state_dict() == b.state_dict() and a.p != 0.3


def test_kornia_loads_only_for_a_policy_that_uses_it():
    """A GAN without augmentation (or with color alone) needs no kornia: the GPU machine lacks it."""
    code = (
        "import sys; import pggan.module, pipelines.gan.run, pipelines.gan.synth; "
        "from pggan.augment import DiffAugment; DiffAugment(''); DiffAugment('color'); "
        "assert 'kornia' not in sys.modules, 'kornia loaded'; "
        "DiffAugment('cutout'); assert 'kornia' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]

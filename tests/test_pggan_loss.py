"""WGAN-GP losses: penalty against a closed form, one-pass critic loss against separate passes."""

from __future__ import annotations

import torch
from torch import nn

from pggan.loss import d_loss_wgan_gp, g_loss_wgan, gradient_penalty
from pggan.networks import Discriminator


class QuadCritic(nn.Module):
    """D(x) = sum(w * x^2): its input gradient 2 w x is known in closed form."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.rand(shape, dtype=torch.float64) + 0.5)

    def forward(self, x, level=None, alpha=1.0, labels=None, n_segments=1):
        return (self.w * x.square()).flatten(1).sum(dim=1)


def _eps(n, seed):
    return torch.rand(
        n, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def test_gradient_penalty_equals_closed_form_and_its_weight_gradient():
    torch.manual_seed(0)
    reals = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    fakes = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    critic = QuadCritic((1, 3, 3))
    gp = gradient_penalty(critic, reals, fakes, 0, 1.0, generator=torch.Generator().manual_seed(7))
    gp.backward()

    w = critic.w.detach().clone().requires_grad_(True)
    mixed = reals + _eps(5, 7) * (fakes - reals)
    norms = (2 * w * mixed).flatten(1).norm(dim=1)  # hand-computed input-gradient norms
    expected = (norms - 1).square().mean()
    expected.backward()
    torch.testing.assert_close(gp.detach(), expected.detach())
    torch.testing.assert_close(critic.w.grad, w.grad)


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    class Unit(nn.Module):
        def forward(self, x, level=None, alpha=1.0, labels=None, n_segments=1):
            return x.flatten(1)[:, 0]  # gradient is a unit vector everywhere

    gp = gradient_penalty(Unit(), torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2), 0, 1.0)
    assert gp.item() == 0.0


def test_d_loss_one_pass_equals_separate_passes():
    torch.manual_seed(0)
    D = Discriminator(8, [8, 8])
    reals, fakes = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    loss, parts = d_loss_wgan_gp(
        D,
        reals,
        fakes,
        1,
        0.5,
        gp_lambda=10.0,
        drift=1e-3,
        generator=torch.Generator().manual_seed(3),
    )
    real_s, fake_s = D(reals, 1, 0.5), D(fakes, 1, 0.5)
    gp = gradient_penalty(D, reals, fakes, 1, 0.5, generator=torch.Generator().manual_seed(3))
    expected = fake_s.mean() - real_s.mean() + 10.0 * gp + 1e-3 * real_s.square().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["wdist"], (real_s.mean() - fake_s.mean()).detach())
    torch.testing.assert_close(parts["gp"], gp.detach())
    assert all(not p.requires_grad for p in parts.values())


def test_d_loss_gradient_reaches_only_critic_and_g_loss_sign():
    torch.manual_seed(0)
    D = Discriminator(8, [8, 8])
    fakes = torch.randn(4, 1, 8, 8, requires_grad=True)
    loss, _ = d_loss_wgan_gp(D, torch.randn(4, 1, 8, 8), fakes, 1, 1.0)
    loss.backward()
    assert fakes.grad is None  # fakes are detached inside the critic loss
    used = {n for n, p in D.named_parameters() if p.grad is not None}
    assert used == {n for n, _ in D.named_parameters() if not n.startswith("from_rgb.0")}
    g = g_loss_wgan(D, fakes, 1, 1.0)
    torch.testing.assert_close(g, -D(fakes, 1, 1.0).mean())


def test_overfitting_signal_is_the_share_of_reals_ranked_above_the_fakes_whatever_the_offset():
    """real_sign = E[sign(D(real) - mean D(fake))]: +1 when every real outranks the fakes, -1 when
    none does, whatever constant the critic adds (WGAN scores have no origin)."""

    class Mean(nn.Module):
        def __init__(self, offset: float):
            super().__init__()
            self.offset = offset

        def forward(self, x, level, alpha, labels=None, n_segments=1):
            return x.flatten(1).mean(1, keepdim=True) + self.offset

    reals = torch.linspace(0.1, 1.0, 8).view(8, 1, 1, 1).expand(8, 1, 4, 4).contiguous()
    fakes = -reals
    for offset in (-100.0, 0.0, 100.0):
        _, parts = d_loss_wgan_gp(Mean(offset), reals, fakes, 0, 1.0)
        assert parts["real_sign"].item() == 1.0
        _, parts = d_loss_wgan_gp(Mean(offset), fakes, reals, 0, 1.0)
        assert parts["real_sign"].item() == -1.0
    half = torch.cat([reals[:4], fakes[:4]])  # four reals above the fakes' mean, four below
    _, parts = d_loss_wgan_gp(Mean(5.0), half, torch.zeros_like(half), 0, 1.0)
    assert parts["real_sign"].item() == 0.0

"""PGGAN generator/discriminator: shapes, fade-in equivalences, conditioning, errors."""

from __future__ import annotations

import pytest
import torch

from pggan.layers import downsample, upsample
from pggan.networks import Discriminator, Generator

CH = [16, 16, 8]  # 4, 8, 16 px


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return Generator(16, CH, latent_dim=12), Discriminator(16, CH)


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_shapes_every_level_and_alpha(nets, level, alpha):
    G, D = nets
    size = 4 * 2**level
    img = G(torch.randn(5, 12), level, alpha)
    assert img.shape == (5, 1, size, size)
    assert D(img, level, alpha).shape == (5,)


def test_default_level_is_full_resolution_and_channels_native(nets):
    G, D = nets
    assert G(torch.randn(2, 12)).shape == (2, 1, 16, 16)
    G3 = Generator(8, [8, 8], latent_dim=4, img_channels=3)
    assert G3(torch.randn(2, 4)).shape == (2, 3, 8, 8)
    assert Discriminator(8, [8, 8], img_channels=3)(torch.randn(2, 3, 8, 8)).shape == (2,)


@pytest.mark.parametrize("level", [1, 2])
def test_alpha_zero_generator_is_upsampled_previous_level(nets, level):
    G, _ = nets
    z = torch.randn(4, 12)
    torch.testing.assert_close(G(z, level, 0.0), upsample(G(z, level - 1, 1.0)))
    assert not torch.allclose(G(z, level, 1.0), upsample(G(z, level - 1, 1.0)))


@pytest.mark.parametrize("level", [1, 2])
def test_alpha_zero_discriminator_is_downsampled_path(nets, level):
    _, D = nets
    x = torch.randn(4, 1, 4 * 2**level, 4 * 2**level)
    torch.testing.assert_close(D(x, level, 0.0), D(downsample(x), level - 1, 1.0))


def test_alpha_blends_linearly_in_generator(nets):
    G, _ = nets
    z = torch.randn(3, 12)
    a, b = G(z, 2, 0.0), G(z, 2, 1.0)
    torch.testing.assert_close(G(z, 2, 0.25), torch.lerp(a, b, 0.25))


def test_fused_and_unfused_generators_agree():
    torch.manual_seed(1)
    g1 = Generator(16, CH, latent_dim=12, fused_up=True)
    g2 = Generator(16, CH, latent_dim=12, fused_up=False)
    g2.load_state_dict(g1.state_dict())
    z = torch.randn(3, 12)
    torch.testing.assert_close(g1(z, 2, 0.5), g2(z, 2, 0.5), rtol=1e-4, atol=1e-5)


def test_lowpass_nets_fade_through_lowpass_resampling_and_take_the_same_weights():
    """resample lowpass changes no weight (a nearest GAN's state dict loads) but the function: fades
    and every level change go through the binomial filter, and upsampling is never fused."""
    torch.manual_seed(2)
    G, D = Generator(16, CH, 12, resample="lowpass"), Discriminator(16, CH, resample="lowpass")
    Gn, Dn = Generator(16, CH, 12), Discriminator(16, CH)
    Gn.load_state_dict(G.state_dict())
    Dn.load_state_dict(D.state_dict())
    z, x = torch.randn(4, 12), torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(G(z, 2, 0.0), upsample(G(z, 1, 1.0), "lowpass"))
    torch.testing.assert_close(D(x, 2, 0.0), D(downsample(x, resample="lowpass"), 1, 1.0))
    assert not torch.allclose(G(z), Gn(z)) and not torch.allclose(D(x), Dn(x))
    assert not any(block.fused_up for block in G.blocks) and all(b.fused_up for b in Gn.blocks)
    with pytest.raises(ValueError, match="resample 'box'"):
        Discriminator(16, CH, resample="box")


@pytest.mark.parametrize("resample", ["nearest", "lowpass"])
def test_fades_train_under_cpu_bf16_autocast(resample):
    """Under bf16 autocast the resampled branch of a fade may come back in fp32 (replicate padding
    runs in fp32); both sides of each blend must agree, forward and through the penalty's gradient."""
    from pggan.loss import d_loss_wgan_gp

    torch.manual_seed(3)
    G, D = Generator(16, CH, 12, resample=resample), Discriminator(16, CH, resample=resample)
    reals = torch.randn(4, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fakes = G(torch.randn(4, 12), 2, 0.5)
        assert downsample(reals.bfloat16(), 2, resample).dtype == torch.bfloat16
        loss = d_loss_wgan_gp(D, reals, fakes.float(), 2, 0.5)[0]
    loss.float().backward()
    grads = [p.grad for p in [*G.parameters(), *D.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_label_conditional_shapes_and_labels_matter():
    torch.manual_seed(0)
    G = Generator(16, CH, latent_dim=12, label_dim=3)
    D = Discriminator(16, CH, label_dim=3)
    with torch.no_grad():  # the projection weight starts random; make D's features matter too
        D.embed.weight.normal_()
    z = torch.randn(4, 12)
    y1 = torch.tensor([[1.0, 0, 0]] * 4)
    y2 = torch.tensor([[0.0, 1, 1]] * 4)
    a, b = G(z, 2, 1.0, y1), G(z, 2, 1.0, y2)
    assert a.shape == (4, 1, 16, 16)
    assert (a - b).abs().mean() > 1e-3
    s1, s2 = D(a, 2, 1.0, y1), D(a, 2, 1.0, y2)
    assert s1.shape == (4,)
    assert (s1 - s2).abs().min() > 1e-6


def test_labels_required_exactly_when_conditional(nets):
    G, D = nets
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, 12), labels=torch.ones(2, 3))
    Gc = Generator(16, CH, latent_dim=12, label_dim=3)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 3\)"):
        Gc(torch.randn(2, 12))


def test_bad_arguments_name_the_value(nets):
    G, D = nets
    with pytest.raises(ValueError, match="level must be in"):
        G(torch.randn(2, 12), 3)
    with pytest.raises(ValueError, match="alpha"):
        G(torch.randn(2, 12), 1, 1.5)
    with pytest.raises(ValueError, match="expects"):
        D(torch.randn(2, 1, 8, 8), 2)
    with pytest.raises(ValueError, match="power of two"):
        Generator(48, [8, 8, 8])
    with pytest.raises(ValueError, match="one width per resolution"):
        Discriminator(16, [8, 8])

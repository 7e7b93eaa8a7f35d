"""EMA math and deterministic sampling to uint8."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pggan.ema import decay_at, update_ema
from pggan.networks import Generator
from pggan.sample import fixed_latents, generate, make_grid_uint8, to_uint8


def test_update_ema_is_the_exponential_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = copy.deepcopy(model)
    start = [p.detach().clone() for p in ema.parameters()]
    for p in model.parameters():
        p.data.add_(1.0)
    model[1].running_mean.fill_(5.0)
    update_ema(ema, model, 0.9)
    for e, s, p in zip(ema.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * s + 0.1 * p)
    torch.testing.assert_close(ema[1].running_mean, torch.full((2,), 5.0))  # buffers copied
    update_ema(ema, model, 0.0)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, p)


def test_decay_ramp():
    assert decay_at(0.999, 0) == pytest.approx(0.1)
    assert decay_at(0.999, 90) == pytest.approx(0.91)
    assert decay_at(0.999, 10**6) == 0.999
    assert decay_at(0.999, 0, rampup=False) == 0.999
    values = [decay_at(0.999, t) for t in range(0, 20000, 100)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="beta"):
        decay_at(1.0, 0)


def test_generate_is_deterministic_uint8_and_batch_independent():
    torch.manual_seed(0)
    G = Generator(16, [16, 8, 8], latent_dim=8)
    a = generate(G, 10, seed=3, batch=4)
    b = generate(G, 10, seed=3, batch=64)
    assert a.dtype == torch.uint8 and a.shape == (10, 1, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, generate(G, 10, seed=4))
    assert generate(G, 3, level=1).shape == (3, 1, 8, 8)
    assert generate(G, 0).shape == (0, 1, 16, 16)
    expected = to_uint8(G(fixed_latents(10, 8, 3)).detach())
    assert torch.equal(a, expected)
    assert G.training  # mode restored


def test_generate_conditional_and_label_count_checked():
    G = Generator(8, [8, 8], latent_dim=4, label_dim=2)
    y = torch.tensor([[1.0, 0.0]] * 3)
    assert generate(G, 3, labels=y).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="3 rows for 5 images"):
        generate(G, 5, labels=y)


def test_to_uint8_maps_range():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]


def test_fixed_latents_depend_on_seed_only():
    assert torch.equal(fixed_latents(4, 3, 1), fixed_latents(4, 3, 1))
    torch.manual_seed(99)
    assert torch.equal(fixed_latents(4, 3, 1)[:2], fixed_latents(2, 3, 1))


def test_make_grid_uint8_keeps_gray_and_tiles():
    imgs = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()
    grid = make_grid_uint8(imgs, nrow=3, padding=1)
    assert grid.dtype == torch.uint8 and grid.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert grid[0, 1, 1].item() == 0 and grid[0, 1, 6].item() == 1 and grid[0, 6, 11].item() == 5
    with pytest.raises(ValueError, match="uint8"):
        make_grid_uint8(imgs.float())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_generate_on_cuda_matches_cpu():
    """generate() on a CUDA generator gives the CPU's uint8 images within a few gray levels."""
    torch.manual_seed(0)
    G = Generator(32, [32, 32, 16, 8], 16).eval()
    cpu = generate(G, 10, seed=3)
    gpu = generate(copy.deepcopy(G).cuda(), 10, seed=3)
    assert gpu.dtype == torch.uint8 and not gpu.is_cuda
    diff = (cpu.int() - gpu.int()).abs()  # TF32 convolutions may shift a few pixels by a level
    assert diff.max().item() <= 3 and diff.float().mean().item() < 0.5

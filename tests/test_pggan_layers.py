"""PGGAN layers: equalized lr, pixel norm, minibatch stddev, fused upsample-conv, resampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pggan.layers import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    check_resample,
    downsample,
    pixel_norm,
    upsample,
)


def test_equalized_lr_effective_weight_has_he_std():
    torch.manual_seed(0)
    conv = EqualConv2d(64, 64, 3)
    eff = conv.weight * conv.scale
    he_std = math.sqrt(2.0 / (64 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.03)
    assert eff.std().item() == pytest.approx(he_std, rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0
    lin = EqualLinear(256, 128, gain=1.0)
    assert (lin.weight * lin.scale).std().item() == pytest.approx(1 / 16, rel=0.03)


def test_equalized_lr_layer_preserves_activation_scale():
    """He scaling: unit-variance input through conv gives output variance ~ gain^2."""
    torch.manual_seed(0)
    conv = EqualConv2d(128, 128, 3, gain=1.0)
    y = conv(torch.randn(8, 128, 16, 16))[:, :, 1:-1, 1:-1]
    assert y.var().item() == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d"])
def test_pixel_norm_gives_unit_rms_per_pixel(layout):
    x = torch.randn(3, 7, 5, 4) * torch.linspace(0.1, 10, 3).view(3, 1, 1, 1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if layout == "2d":
        x = x[:, :, 0, 0]
    y = pixel_norm(x)
    rms = y.square().mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-5, atol=1e-5)
    ref = x / (x.square().mean(dim=1, keepdim=True) + 1e-8).sqrt()  # the formula itself
    torch.testing.assert_close(y, ref)


def test_minibatch_std_matches_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 2, 2)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    for g in range(2):  # contiguous groups of 4
        grp = x[4 * g : 4 * g + 4]
        std = (grp.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        expected = torch.full((4, 2, 2), std.item())
        torch.testing.assert_close(out[4 * g : 4 * g + 4, 3], expected)


def test_minibatch_std_group_falls_back_to_batch_and_divisor():
    x = torch.randn(3, 2, 4, 4)
    out = MinibatchStd(4)(x)  # batch 3 < 4: one group of 3
    std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    torch.testing.assert_close(out[:, 2], torch.full((3, 4, 4), std.item()))
    out6 = MinibatchStd(4)(torch.randn(6, 2, 4, 4))  # 6: groups of 3
    assert not torch.equal(out6[0, 2], out6[3, 2])
    torch.testing.assert_close(out6[0, 2], out6[2, 2])


def test_minibatch_std_segments_never_mix():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 5
    both = MinibatchStd(4)(torch.cat([a, b]), n_segments=2)
    torch.testing.assert_close(both, torch.cat([MinibatchStd(4)(a), MinibatchStd(4)(b)]))
    with pytest.raises(ValueError, match="equal segments"):
        MinibatchStd(4)(torch.randn(5, 3, 4, 4), n_segments=2)


@pytest.mark.parametrize("size", [1, 4, 7])
def test_fused_upsample_conv_equals_upsample_then_conv(size):
    torch.manual_seed(size)
    conv = EqualConv2d(6, 5, 3, up=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 6, size, size, dtype=torch.float64)
    conv = conv.double()
    ref = F.conv2d(upsample(x), conv.weight * conv.scale, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)


def test_fused_upsample_needs_3x3():
    with pytest.raises(ValueError, match="3x3"):
        EqualConv2d(4, 4, 1, up=True)


def test_minibatch_std_of_bf16_features_is_the_fp32_stddev_of_those_values() -> None:
    """Under bf16 autocast D's features arrive in bf16; their spread must not drown in bf16 rounding.

    Features near 10 differ by about 0.1 while bf16 steps by 0.0625 there: a mean and difference
    taken in bf16 miss by a good part of the spread, which is D's only cue against collapse.
    """
    torch.manual_seed(0)
    x = (10 + 0.1 * torch.randn(8, 16, 4, 4)).bfloat16()
    layer = MinibatchStd(group_size=4)
    want = layer(x.float())[:, -1]  # the same bf16 values, statistics in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.dtype == torch.bfloat16 and got.shape == (8, 17, 4, 4)
    assert torch.equal(got[:, :-1], x)
    torch.testing.assert_close(got[:, -1].float(), want, rtol=8e-3, atol=0)


BINOMIAL = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_lowpass_downsample_is_the_binomial_filter_at_stride_2(dtype):
    """Reference: a depthwise conv with [1,3,3,1]/8 per axis at stride 2 over edge-replicated input;
    factor 4 is two such steps; the input's dtype and channels_last layout are kept."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    kernel = (torch.outer(BINOMIAL, BINOMIAL) / 64).expand(3, 1, 4, 4)

    def ref(t):
        return F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, groups=3)

    got = downsample(x.to(dtype).contiguous(memory_format=torch.channels_last), 2, "lowpass")
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    tol = 1e-12 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(got.double(), ref(x.to(dtype).double()), rtol=tol, atol=tol)
    torch.testing.assert_close(downsample(x, 4, "lowpass"), ref(ref(x)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(downsample(x, 2), F.avg_pool2d(x, 2))  # the paper's box filter
    with pytest.raises(ValueError, match="power-of-2"):
        downsample(x, 3, "lowpass")


def test_lowpass_upsample_is_the_transposed_binomial_filter():
    """Inside the border, 2x lowpass upsampling is the transposed conv with [1,3,3,1]/4 per axis;
    it keeps a constant image constant (edges included) and removes nearest's 2x2 blocks."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    kernel = (torch.outer(BINOMIAL, BINOMIAL) / 16).expand(3, 1, 4, 4)
    ref = F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=3)
    got = upsample(x, "lowpass")
    torch.testing.assert_close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    flat = torch.full((1, 1, 4, 4), 0.3, dtype=torch.float64)
    torch.testing.assert_close(
        upsample(flat, "lowpass"), torch.full((1, 1, 8, 8), 0.3, dtype=flat.dtype)
    )
    near = upsample(x)
    assert torch.equal(near[..., 0::2, 0::2], near[..., 1::2, 1::2])  # nearest: 2x2 blocks
    assert not torch.equal(got[..., 0::2, 0::2], got[..., 1::2, 1::2])


def test_resample_modes_are_named():
    assert check_resample("lowpass") == "lowpass"
    with pytest.raises(ValueError, match="use one of nearest, lowpass"):
        check_resample("bicubic")

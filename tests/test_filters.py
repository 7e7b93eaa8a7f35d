"""filters: torch ops equal scipy/skimage references on real X-rays; bank order, names, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters
import torch
from conftest import load_gray

from filters import (
    DEFAULT_FILTERS,
    FILTERS,
    filter_bank,
    gaussian_blur,
    gaussian_params,
    minimum_filter,
    reflect_pad,
    unsharp_mask,
)

SIZE = 128


@pytest.fixture(scope="module")
def images(shared_data: Path) -> np.ndarray:
    """16 Kermany NORMAL chest JPEGs and 8 knee PNGs (KL 4), uint8 (24, 128, 128)."""
    chest = sorted((shared_data / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:16]
    knee = sorted((shared_data / "knee_kl" / "train" / "4").glob("*.png"))[:8]
    assert len(chest) == 16 and len(knee) == 8
    return load_gray(chest + knee, SIZE)


@pytest.fixture(scope="module")
def x8(images: np.ndarray) -> torch.Tensor:
    """The images as a (N, 1, H, W) uint8 tensor."""
    return torch.from_numpy(images).unsqueeze(1)


def _to_u8(a: np.ndarray) -> np.ndarray:
    """Round and clip a float reference to uint8 gray levels."""
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _max_gray_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> int:
    """Largest absolute difference in gray levels between two uint8 stacks."""
    a = np.asarray(a, dtype=np.int32).reshape(-1)
    b = np.asarray(b, dtype=np.int32).reshape(-1)
    return int(np.abs(a - b).max())


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation per image (anisotropic, L1)."""
    x = x.double()
    return (x.diff(dim=-1).abs().sum((1, 2, 3))) + (x.diff(dim=-2).abs().sum((1, 2, 3)))


def test_gaussian_params_follow_opencv_and_scipy_rules() -> None:
    assert gaussian_params(None, None) == pytest.approx((1.1, 2))
    assert gaussian_params(None, 5) == pytest.approx((1.1, 2))
    assert gaussian_params(None, 7) == pytest.approx((1.4, 3))
    assert gaussian_params(2.0, None) == (2.0, 8)  # radius = round(4 sigma), truncate 4.0
    assert gaussian_params(1.1, None) == (1.1, 4)
    assert gaussian_params(3.0, 5) == (3.0, 2)


@pytest.mark.parametrize("pads", [(2, 1, 3, 4), (0, 0, 0, 0), (3, 3, 4, 4), (7, 10, 9, 13)])
def test_reflect_pad_is_half_sample_symmetric(pads: tuple[int, int, int, int]) -> None:
    a = torch.arange(12.0).view(1, 1, 3, 4)  # the last case pads wider than the image
    ours = reflect_pad(a, *pads)[0, 0].numpy()
    ref = np.pad(a[0, 0].numpy(), ((pads[0], pads[1]), (pads[2], pads[3])), mode="symmetric")
    np.testing.assert_array_equal(ours, ref)
    assert reflect_pad(a, 0, 0, 3, 0)[0, 0, 0].tolist() == [2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("sigma", "kernel_size"), [(None, None), (None, 3), (None, 7), (1.5, None), (2.0, 9)]
)
def test_gaussian_blur_matches_scipy(x8: torch.Tensor, images: np.ndarray, sigma, kernel_size):
    s, radius = gaussian_params(sigma, kernel_size)
    ref = np.stack(
        [
            ndi.gaussian_filter(im.astype(np.float64), s, truncate=radius / s, mode="reflect")
            for im in images
        ]
    )
    assert _max_gray_diff(gaussian_blur(x8, sigma, kernel_size), _to_u8(ref)) <= 1
    ours = gaussian_blur(x8.double() / 255, sigma, kernel_size)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref / 255, atol=1e-12)


def test_gaussian_blur_wide_kernel_on_small_image_matches_scipy(images: np.ndarray) -> None:
    small = images[:4, :10, :7].astype(np.float64)  # radius 24 > both sides: repeated reflection
    ref = np.stack([ndi.gaussian_filter(im, 6.0, mode="reflect") for im in small])
    ours = gaussian_blur(torch.from_numpy(small).unsqueeze(1), sigma=6.0)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)


@pytest.mark.parametrize(("sigma", "amount"), [(2.0, 1.0), (1.0, 2.0), (3.0, 0.5)])
def test_unsharp_mask_matches_skimage(x8: torch.Tensor, images: np.ndarray, sigma, amount):
    ref = np.stack(
        [skimage.filters.unsharp_mask(im, radius=sigma, amount=amount) for im in images]
    )  # float in [0, 1], clipped, borders "reflect"
    assert _max_gray_diff(unsharp_mask(x8, sigma, amount), _to_u8(ref * 255)) <= 1
    ours01 = unsharp_mask(x8.float() / 255, sigma, amount)[:, 0].numpy()
    np.testing.assert_allclose(ours01, ref, atol=1e-5)
    signed = images.astype(np.float64) / 127.5 - 1.0
    ref_signed = np.stack(
        [skimage.filters.unsharp_mask(im, radius=sigma, amount=amount) for im in signed]
    )  # skimage clips to [-1, 1] when the input has negatives
    ours_signed = unsharp_mask(torch.from_numpy(signed).unsqueeze(1), sigma, amount)
    np.testing.assert_allclose(ours_signed[:, 0].numpy(), ref_signed, atol=1e-12)
    assert ours_signed.min() >= -1.0 and ours_signed.max() <= 1.0


def test_unsharp_mask_explicit_value_range_clips_there(x8: torch.Tensor) -> None:
    y = unsharp_mask(x8.float(), amount=3.0, value_range=(10.0, 200.0))
    assert y.min() == 10.0 and y.max() == 200.0


@pytest.mark.parametrize("size", [3, 4, 5])
def test_minimum_filter_matches_scipy(x8: torch.Tensor, images: np.ndarray, size: int) -> None:
    ref = np.stack([ndi.minimum_filter(im, size, mode="reflect") for im in images])
    ours = minimum_filter(x8, size)
    assert ours.dtype == torch.uint8
    np.testing.assert_array_equal(ours[:, 0].numpy(), ref)
    np.testing.assert_array_equal(
        minimum_filter(x8.float() / 255, size)[:, 0].numpy(), ref.astype(np.float32) / 255
    )


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_float_and_uint8_paths_agree(x8: torch.Tensor, name: str) -> None:
    op = FILTERS[name]
    from_u8 = op(x8)
    from_01 = op(x8.float() / 255)
    from_pm1 = op(x8.float() / 127.5 - 1)
    assert _max_gray_diff(from_u8, (from_01 * 255).round()) <= 1
    assert _max_gray_diff(from_u8, ((from_pm1 + 1) * 127.5).round()) <= 1


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_shape_and_dtype_preserved(x8: torch.Tensor, name: str, dtype: torch.dtype) -> None:
    x = x8[:3, :, :50, :37]
    x = x if dtype == torch.uint8 else (x.to(dtype) / 255)
    y = FILTERS[name](x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.is_contiguous() and y.data_ptr() != x.data_ptr()
    assert FILTERS[name](x[:0]).shape == (0, 1, 50, 37)


def test_filters_change_images_the_way_they_should(x8: torch.Tensor) -> None:
    tv = _tv(x8)
    assert (_tv(gaussian_blur(x8)) < tv).all()
    assert (_tv(unsharp_mask(x8)) > tv).all()
    eroded = minimum_filter(x8)
    assert (eroded <= x8).all() and (eroded < x8).any()


def test_filter_bank_order_and_names(x8: torch.Tensor) -> None:
    n = x8.shape[0]
    out, names = filter_bank(x8)
    assert out.shape == (4 * n, 1, SIZE, SIZE) and out.dtype == torch.uint8
    assert (
        names
        == ["original"] * n + ["gaussian_blur"] * n + ["unsharp_mask"] * n + ["minimum_filter"] * n
    )
    assert torch.equal(out[:n], x8)
    assert torch.equal(out[n : 2 * n], gaussian_blur(x8))
    assert torch.equal(out[2 * n : 3 * n], unsharp_mask(x8))
    assert torch.equal(out[3 * n :], minimum_filter(x8))


def test_filter_bank_subset_order_and_params(x8: torch.Tensor) -> None:
    x = x8[:5]
    out, names = filter_bank(
        x, ("minimum_filter", "gaussian_blur"), gaussian_blur={"kernel_size": 9}
    )
    assert names == ["original"] * 5 + ["minimum_filter"] * 5 + ["gaussian_blur"] * 5
    assert torch.equal(out[5:10], minimum_filter(x))
    assert torch.equal(out[10:], gaussian_blur(x, kernel_size=9))
    assert not torch.equal(out[10:], gaussian_blur(x))
    only, only_names = filter_bank(x, ())
    assert torch.equal(only, x) and only_names == ["original"] * 5


def test_unknown_or_misused_filter_names_raise(x8: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"unknown filter 'median'.*gaussian_blur"):
        filter_bank(x8, ("gaussian_blur", "median"))
    with pytest.raises(ValueError, match=r"'unsharp_mask', which is not in names"):
        filter_bank(x8, ("gaussian_blur",), unsharp_mask={"sigma": 1.0})
    with pytest.raises(ValueError, match="repeat"):
        filter_bank(x8, ("gaussian_blur", "gaussian_blur"))


def test_bad_inputs_raise(x8: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(128, 128\)"):
        gaussian_blur(x8[0, 0])
    with pytest.raises(ValueError, match="int32"):
        minimum_filter(x8.to(torch.int32))
    with pytest.raises(ValueError, match="kernel_size.*4"):
        gaussian_blur(x8, kernel_size=4)
    with pytest.raises(ValueError, match="sigma.*0"):
        unsharp_mask(x8, sigma=0.0)
    with pytest.raises(ValueError, match="size.*0"):
        minimum_filter(x8, size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(x8: torch.Tensor) -> None:
    cpu, _ = filter_bank(x8)
    gpu, _ = filter_bank(x8.cuda())
    assert gpu.is_cuda and _max_gray_diff(cpu, gpu.cpu()) <= 1


def test_fused_bank_equals_separate_filters_on_odd_shapes() -> None:
    """The bank's one-pass path (shared pad, any order, several channels) equals each op alone."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (7, 2, 37, 50), dtype=torch.uint8, generator=gen)
    params = {
        "gaussian_blur": {"kernel_size": 7},
        "unsharp_mask": {"sigma": 1.5, "amount": 0.7},
        "minimum_filter": {"size": 4},
    }
    for names in [DEFAULT_FILTERS, ("minimum_filter", "unsharp_mask", "gaussian_blur")]:
        for batch in (x, x.float() / 255):
            out, _ = filter_bank(batch, names, **params)
            for k, name in enumerate(names, start=1):
                alone = FILTERS[name](batch, **params[name])
                assert torch.equal(out[k * 7 : (k + 1) * 7], alone), (name, batch.dtype)
    images = x.reshape(14, 37, 50).numpy()
    out, _ = filter_bank(x, **params)
    ref_blur = [ndi.gaussian_filter(im.astype(np.float64), 1.4, truncate=3 / 1.4) for im in images]
    ref_sharp = [skimage.filters.unsharp_mask(im, radius=1.5, amount=0.7) for im in images]
    ref_min = [ndi.minimum_filter(im, 4, mode="reflect") for im in images]
    assert _max_gray_diff(out[7:14], _to_u8(np.stack(ref_blur))) <= 1
    assert _max_gray_diff(out[14:21], _to_u8(np.stack(ref_sharp) * 255)) <= 1
    np.testing.assert_array_equal(out[21:].reshape(14, 37, 50).numpy(), np.stack(ref_min))


def test_bank_on_threads_equals_one_thread_and_restores_count(x8: torch.Tensor) -> None:
    """Chunks shared out to worker threads give the same bank; the torch thread count is kept."""
    x = torch.cat([x8, x8.flip(-1)])  # 48 images: three chunks at 128 px
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, _ = filter_bank(x)
        torch.set_num_threads(2)
        threaded, _ = filter_bank(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(single, threaded)


def test_bank_mixes_fused_and_registered_filters(
    x8: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter added to FILTERS runs on its own beside the built-ins, in names order."""
    monkeypatch.setitem(FILTERS, "invert", lambda x: 255 - x)
    x = x8[:4]
    out, names = filter_bank(x, ("gaussian_blur", "invert", "minimum_filter"))
    assert (
        names == ["original"] * 4 + ["gaussian_blur"] * 4 + ["invert"] * 4 + ["minimum_filter"] * 4
    )
    assert torch.equal(out[4:8], gaussian_blur(x))
    assert torch.equal(out[8:12], 255 - x)
    assert torch.equal(out[12:], minimum_filter(x))


def test_expand_takes_a_read_only_array_without_warning_and_leaves_it_alone() -> None:
    """The stores hand the GAN read-only memory-mapped images: the bank copies, never warns."""
    import warnings

    from pipelines.config import load_config
    from pipelines.data.prefilter import expand

    images = (np.arange(2 * 16 * 16) % 251).astype(np.uint8).reshape(2, 1, 16, 16)
    before = images.copy()
    images.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, names = expand(images, load_config("cpu-demo"))
    assert out.shape[1:] == (1, 16, 16) and out.shape[0] == len(names) > 2
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(out[:2], before)

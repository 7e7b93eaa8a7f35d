"""GAN metrics: FID/KID vs torchmetrics and closed form, real-data ordering, memorization, diversity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from conftest import load_gray
from PIL import Image
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.models import DenseNet

from pipelines.errors import RareganError
from pipelines.fidelity import distances as gan_eval_distances
from pipelines.fidelity.memorization import pixel_nearest
from pipelines.fidelity.metrics import (
    classifier_feature_net,
    diversity_report,
    features,
    frechet_distance,
    gan_eval,
    gan_eval_report,
    inception_fid,
    kernel_inception_distance,
    mean_pairwise_ms_ssim,
    memorization_report,
    near_copy_share,
    nearest_real,
    random_feature_net,
    save_closest_pairs_png,
)

SIZE = 32


@pytest.fixture(scope="module")
def kermany(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of 100 Kermany NORMAL images at 32 px with no patient (IM-XXXX) in common."""
    files = sorted((shared_data / "chest_xray/train/NORMAL").glob("IM-*.jpeg"))
    patients = sorted({f.name.rsplit("-", 1)[0] for f in files})
    first = set(patients[: len(patients) // 2])
    a = [f for f in files if f.name.rsplit("-", 1)[0] in first][:100]
    b = [f for f in files if f.name.rsplit("-", 1)[0] not in first][:100]
    return load_gray(a, SIZE, "BOX")[:, None], load_gray(b, SIZE, "BOX")[:, None]


class _Identity(nn.Module):
    """torchmetrics' custom feature extractor that passes features through."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(("n", "d"), [(300, 8), (40, 64)])
def test_fid_kid_equal_torchmetrics(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d))
    b = rng.normal(0.3, 1.5, size=(n, d)) * np.linspace(0.5, 2.0, d)
    fid = FrechetInceptionDistance(feature=_Identity(d))
    kid = KernelInceptionDistance(feature=_Identity(d), subsets=1, subset_size=n)
    for metric in (fid, kid):
        metric.update(torch.tensor(a), real=True)
        metric.update(torch.tensor(b), real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)
    kid_mean, kid_std = kernel_inception_distance(a, b, subsets=1, subset_size=n)
    assert kid_mean == pytest.approx(float(kid.compute()[0]), rel=1e-9)
    assert kid_std == 0.0


def test_frechet_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 4))
    z = z - z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # exact mean 0, cov I
    mu1, var1 = np.array([0.0, 1.0, 2.0, -1.0]), np.array([1.0, 4.0, 0.25, 2.0])
    mu2, var2 = np.array([1.0, 1.0, 0.0, 0.5]), np.array([9.0, 1.0, 0.25, 0.5])
    x1, x2 = mu1 + z * np.sqrt(var1), mu2 + z[::-1] * np.sqrt(var2)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(x1, x2) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(x1, x1) == pytest.approx(0.0, abs=1e-9)


def test_kid_subsets_seeded_and_near_zero_for_one_distribution() -> None:
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(400, 16)), rng.normal(size=(400, 16)), rng.normal(1, 1, (400, 16))
    same = kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert same == kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert same != kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=4)
    shifted = kernel_inception_distance(a, c, subsets=20, subset_size=100, seed=3)
    with pytest.MonkeyPatch.context() as mp:  # per-subset kernels give the same numbers
        mp.setattr(gan_eval_distances, "_FULL_KERNEL_MAX", 10)
        per_subset = kernel_inception_distance(a, c, subsets=20, subset_size=100, seed=3)
    np.testing.assert_allclose(per_subset, shifted, rtol=1e-9)
    assert same[1] > 0 and abs(same[0]) < 3 * same[1] + 1e-3
    assert shifted[0] > 20 * max(abs(same[0]), same[1])


def domain_fid_kid(real, fake, net=None, **kid) -> dict:
    """FID/KID part of gan_eval's report."""
    return gan_eval(real, fake, net, n_pairs=4, **kid)[0]


def test_domain_fid_kid_orders_real_data_far_from_noise(kermany) -> None:
    a, b = kermany
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    net = random_feature_net(SIZE, seed=0, dim=64)
    held = domain_fid_kid(a, b, net, kid_subsets=10, kid_subset_size=50)
    far = domain_fid_kid(a, noise, net, kid_subsets=10, kid_subset_size=50)
    assert far["fid"] > 10 * held["fid"] > 0
    assert far["kid"] > 10 * max(held["kid"], held["kid_std"])
    assert held["n_real"] == held["n_fake"] == 100
    itself = domain_fid_kid(a, a, kid_subsets=1)  # the default net: 256-d random features
    assert itself["fid"] == pytest.approx(0.0, abs=1e-6 * held["fid"])
    assert itself["feature_space"] == "random-conv(size=32, seed=0, dim=256)"


def test_random_feature_net_is_seeded(kermany) -> None:
    a, _ = kermany
    f0 = features(random_feature_net(SIZE, seed=0, dim=64), a[:10], batch=4)
    assert f0.shape == (10, 64)
    assert np.array_equal(f0, features(random_feature_net(SIZE, seed=0, dim=64), a[:10]))
    assert not np.allclose(f0, features(random_feature_net(SIZE, seed=1, dim=64), a[:10]))


def _one_channel(model: nn.Module, attr: str) -> nn.Module:
    parent, _, name = attr.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, name)
    setattr(owner, name, nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding))
    return model


@pytest.mark.parametrize(
    ("build", "stem", "head", "dim"),
    [
        # a small DenseNet (same torchvision class and layout as densenet121, faster to build)
        (lambda: DenseNet(8, (2, 2), 16, num_classes=3), "features.conv0", "classifier", 32),
        (lambda: torchvision.models.resnet18(weights=None, num_classes=3), "conv1", "fc", 512),
    ],
)
def test_classifier_feature_net_gives_penultimate_features(kermany, build, stem, head, dim):
    torch.manual_seed(0)
    model = _one_channel(build(), stem).eval()
    images = kermany[0][:4]
    got = features(classifier_feature_net(model), images)
    seen = []
    model.get_submodule(head).register_forward_pre_hook(lambda _m, x: seen.append(x[0]))
    with torch.no_grad():
        model((torch.from_numpy(images).float() / 255 - 0.449) / 0.226)
    assert got.shape == (4, dim)
    np.testing.assert_allclose(got, seen[0].double().numpy(), rtol=1e-4, atol=1e-5)


def test_classifier_feature_net_falls_back_to_a_hook_on_the_last_linear(kermany) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 3))
    images = kermany[0][:3]
    with torch.no_grad():
        x = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
        expected = torch.relu(model[0](x)).flatten(1).double().numpy()
    got = features(classifier_feature_net(model, mean=0.5, std=0.25), images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_classifier_feature_net_takes_a_lightning_classifier_and_its_normalization(kermany):
    from classify import Classifier

    torch.manual_seed(0)
    clf = Classifier(model_name="cnn5", label_names=("a", "b"), mean=0.5, std=0.25).eval()
    images = kermany[0][:3]
    with torch.no_grad():
        x = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
        expected = clf.model.backbone(x).double().numpy()
    net = classifier_feature_net(clf)
    np.testing.assert_allclose(features(net, images), expected, rtol=1e-5, atol=1e-6)
    assert net.feature_space == "classifier:cnn5"


def test_pixel_nearest_chunked_equals_brute_force(kermany) -> None:
    a, b = kermany
    fa, fb = a.reshape(100, -1) / 255.0, b[:30].reshape(30, -1) / 255.0
    d = np.sqrt(((fb[:, None] - fa[None]) ** 2).mean(-1))
    for chunk, ref_chunk in ((7, 2048), (7, 13), (1000, 1)):  # blocks over queries and references
        idx, rms = pixel_nearest(
            torch.from_numpy(b[:30]), torch.from_numpy(a), chunk=chunk, ref_chunk=ref_chunk
        )
        assert np.array_equal(idx, d.argmin(1))
        np.testing.assert_allclose(rms, d.min(1), rtol=1e-9)
    # leave-one-out across reference blocks: never the image itself
    loo, _ = pixel_nearest(torch.from_numpy(a), torch.from_numpy(a), True, chunk=9, ref_chunk=11)
    self_d = np.sqrt(((fa[:, None] - fa[None]) ** 2).mean(-1))
    np.fill_diagonal(self_d, np.inf)
    assert np.array_equal(loo, self_d.argmin(1))


def test_pixel_nearest_memory_is_bounded_by_its_blocks(tmp_path: Path) -> None:
    """Paper scale must fit: peak memory grows with the block sizes, not with the set sizes."""
    script = tmp_path / "peak.py"
    script.write_text(
        "import resource, sys, torch\n"
        "from pipelines.fidelity.memorization import pixel_nearest\n"
        "q = torch.randint(0, 256, (3000, 1, 128, 128), dtype=torch.uint8)\n"
        "r = torch.randint(0, 256, (3000, 1, 128, 128), dtype=torch.uint8)\n"
        "pixel_nearest(q[:40], r[:40], chunk=8, ref_chunk=16)\n"  # loads the BLAS kernels
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixel_nearest(q, r, chunk=64, ref_chunk=128)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    extra = int(out.stdout.split()[-1])
    whole_sets_as_float = 2 * 3000 * 128 * 128 * 4  # what an unblocked version holds: 393 MB
    assert extra < whole_sets_as_float / 3, extra


def _planted(kermany) -> tuple[np.ndarray, np.ndarray]:
    """Fakes: an exact copy of real 3, a lightly noised copy of real 10, 30 other patients' images."""
    a, b = kermany
    noise = np.random.default_rng(0).normal(0, 3, a[10].shape)
    noised = np.clip(a[10].astype(float) + noise, 0, 255).round().astype(np.uint8)
    return a, np.concatenate([a[3:4], noised[None], b[:30]])


def test_nearest_real_flags_planted_copies_only(kermany, tmp_path: Path) -> None:
    real, fake = _planted(kermany)
    table = nearest_real(real, fake)
    assert table["near_copy"].tolist() == [True, True] + [False] * 30
    assert table["real_index"].tolist()[:2] == [3, 10]
    assert table.loc[0, "pixel_rms"] == 0.0 and table.loc[0, "feature_real_index"] == 3
    assert table.loc[0, "feature_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert table.loc[1, "feature_real_index"] == 10
    assert table.loc[1, "feature_cosine"] > table["feature_cosine"][2:].max()
    thr = table.attrs["near_copy_threshold"]
    assert table.loc[1, "pixel_rms"] < thr < table["pixel_rms"][2:].min()
    out = tmp_path / "pairs.png"
    save_closest_pairs_png(out, real, fake, table, k=6)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 400


def test_ms_ssim_diversity(kermany) -> None:
    a, b = kermany
    copies = np.repeat(a[:1], 50, axis=0)
    assert mean_pairwise_ms_ssim(copies, n_pairs=30) == pytest.approx(1.0, abs=1e-5)
    distinct = mean_pairwise_ms_ssim(a, n_pairs=30, seed=1)
    assert 0.0 < distinct < 0.95
    assert distinct == mean_pairwise_ms_ssim(a, n_pairs=30, seed=1)
    report = diversity_report(b, copies, n_pairs=30)
    assert report["ms_ssim_ratio"] == pytest.approx(1.0 / report["ms_ssim_real"], rel=1e-4)
    assert (report["ms_ssim_kernel"], report["ms_ssim_scales"]) == (7, 3)


def test_gan_eval_report_is_json_and_counts_copies(kermany) -> None:
    real, fake = _planted(kermany)
    kw = {"kid_subsets": 5, "kid_subset_size": 30, "n_pairs": 20}
    report, table = gan_eval(real, fake, random_feature_net(SIZE, dim=32), **kw)
    assert json.loads(json.dumps(report)) == report
    assert report["memorization"]["n_near_copies"] == 2 == int(table["near_copy"].sum())
    assert report["n_real"] == 100 and report["n_fake"] == 32 and report["inception_fid"] is None
    assert report["fid_few_samples"] is True
    assert set(report["diversity"]) >= {"ms_ssim_real", "ms_ssim_fake", "ms_ssim_ratio"}
    assert gan_eval_report(real, fake, random_feature_net(SIZE, dim=32), **kw) == report


def test_user_errors_name_the_culprit(kermany, tmp_path: Path) -> None:
    a, _ = kermany
    with pytest.raises(RareganError, match="synthetic images must be uint8.*float32"):
        domain_fid_kid(a, a.astype(np.float32))
    small = a[:, :, :16, :16].copy()
    with pytest.raises(RareganError, match=r"\(32, 32\) px but synthetic images are \(16, 16\)"):
        nearest_real(a, small)
    missing = tmp_path / "pt_inception.pth"
    with pytest.raises(RareganError, match=f"{missing} does not exist"):
        inception_fid(a, a, missing)
    missing.write_bytes(b"not a state dict")
    try:
        import torch_fidelity  # noqa: F401

        expected = f"{missing} cannot be loaded"
    except ImportError:
        expected = "needs the torch-fidelity package"
    with pytest.raises(RareganError, match=expected):
        inception_fid(a, a, missing)


def _random_fid_inception_weights(path: Path) -> Path:
    """A state dict of the FID Inception network (torch-fidelity's architecture) at random init.

    The real pt_inception-2015-12-05 weights cannot be fetched offline; the architecture, the file
    format and the whole torchmetrics path are the same, only the feature values are not Inception's.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as fi

    original = fi.FeatureExtractorInceptionV3.load_state_dict
    fi.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        with mock.patch.object(fi, "load_state_dict_from_url", lambda *a, **k: {}):
            torch.manual_seed(0)
            net = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fi.FeatureExtractorInceptionV3.load_state_dict = original
    torch.save(net.state_dict(), path)
    return path


def test_inception_fid_from_local_weights(kermany, tmp_path: Path) -> None:
    weights = _random_fid_inception_weights(tmp_path / "pt_inception.pth")
    a, b = kermany
    a, b = a[:16], b[:16]
    noise = np.random.default_rng(0).integers(0, 256, size=a.shape, dtype=np.uint8)
    held_out = inception_fid(a, b, weights)  # 2048-d features: each call ~15 s of eigvals
    against_noise = inception_fid(a, noise, weights)
    assert 0 < held_out < against_noise  # other patients' X-rays are closer than noise


def test_near_copy_share_is_the_worst_over_own_and_source_images():
    """A fine-tuned GAN that copies its source's images is flagged although its own are not."""
    rng = np.random.default_rng(0)
    own, source = (rng.integers(0, 256, (40, 1, 16, 16), dtype=np.uint8) for _ in range(2))
    fake = np.concatenate([source[:10], rng.integers(0, 256, (10, 1, 16, 16), dtype=np.uint8)])
    net = random_feature_net(16, 0)
    mine, theirs = memorization_report(own, fake, net), memorization_report(source, fake, net)
    assert mine["n_near_copies"] == 0 and theirs["n_near_copies"] == 10
    assert near_copy_share({"memorization": mine, "memorization_sources": [theirs]}) == 0.5
    assert near_copy_share({"memorization": mine}) == 0.0
    skipped = {"run": "gone", "skipped": "the source run is not on disk"}
    assert near_copy_share({"memorization": mine, "memorization_sources": [skipped]}) == 0.0


def test_memorized_share_counts_samples_closer_to_training_than_held_out_images_are():
    """A copying generator (its samples = training images) is 100 % memorized; fresh draws of the
    same distribution as the held-out images about the quantile (≤ a few %)."""
    from pipelines.fidelity.memorization import memorized_share

    rng = np.random.default_rng(0)

    def draw(n):
        return torch.from_numpy(rng.integers(0, 256, size=(n, 1, 16, 16), dtype=np.uint8))

    train, held, fresh = draw(200), draw(400), draw(400)
    copies = train[rng.integers(0, 200, 100)]
    assert memorized_share(train, held, copies)["share"] == 1.0
    fair = memorized_share(train, held, fresh)
    assert fair["share"] <= 0.04 and fair["n_heldout"] == 400 and fair["quantile"] == 0.01

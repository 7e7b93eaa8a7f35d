"""Distribution distances between real and synthetic images in a feature space: FID, KID, and
k-NN precision and recall."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from pipelines.errors import RareganError
from pipelines.fidelity.features import as_images, features, random_feature_net


def _as_features(f: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be (N >= 2, D) features, got shape {f.shape}")
    return f


def _feature_pair(f_real: np.ndarray, f_fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as checked float64 arrays of one feature size."""
    f1, f2 = _as_features(f_real, "f_real"), _as_features(f_fake, "f_fake")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    return f1, f2


def frechet_distance(f_real: np.ndarray, f_fake: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance ||μ1 - μ2||² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^½) between two feature sets (N, D).

    Σ are the unbiased sample covariances. When sqrtm of the (near-singular) product is not
    finite, `eps` is added to both diagonals; imaginary parts from round-off are dropped and
    the result is clamped at 0.
    """
    f1, f2 = _feature_pair(f_real, f_fake)
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1 = np.atleast_2d(np.cov(f1, rowvar=False))
    s2 = np.atleast_2d(np.cov(f2, rowvar=False))
    with warnings.catch_warnings():  # singular Σ (fewer samples than dimensions) is expected
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean).real
    return float(max(value, 0.0))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The cubic polynomial kernel matrix k(a, b) = (a·b / d + 1)³."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD² from the kernel matrices of two samples of equal size m."""
    m = k_xx.shape[0]
    off = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2.0 * k_xy.sum() / m**2)


# Above this many features per set, kernel matrices are computed per subset, not once.
_FULL_KERNEL_MAX = 8192


def kernel_inception_distance(
    f_real: np.ndarray,
    f_fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std (ddof 0) of unbiased MMD² over `subsets` random subsets (no replacement).

    Each subset draws min(subset_size, N_real, N_fake) real and as many synthetic features with
    a numpy generator seeded by `seed`; the kernel is the cubic polynomial (x·y / d + 1)³.
    Up to 8192 features per set, the full kernel matrices are computed once and reused.
    """
    f1, f2 = _feature_pair(f_real, f_fake)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    rng = np.random.default_rng(seed)
    draws = [
        (rng.choice(f1.shape[0], m, replace=False), rng.choice(f2.shape[0], m, replace=False))
        for _ in range(subsets)
    ]
    if max(f1.shape[0], f2.shape[0]) <= _FULL_KERNEL_MAX:
        scores = _mmd2_from_full_kernels(f1, f2, draws)
    else:
        scores = [
            _mmd2(
                _poly_kernel(f1[i], f1[i]), _poly_kernel(f2[j], f2[j]), _poly_kernel(f1[i], f2[j])
            )
            for i, j in draws
        ]
    return float(np.mean(scores)), float(np.std(scores))


def _mmd2_from_full_kernels(
    f1: np.ndarray, f2: np.ndarray, draws: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Unbiased MMD² per subset from full kernel matrices, with 0/1 subset indicator columns."""
    w1 = np.zeros((f1.shape[0], len(draws)))
    w2 = np.zeros((f2.shape[0], len(draws)))
    for s, (i, j) in enumerate(draws):
        w1[i, s] = 1.0
        w2[j, s] = 1.0
    k11, k22, k12 = _poly_kernel(f1, f1), _poly_kernel(f2, f2), _poly_kernel(f1, f2)
    m = len(draws[0][0])
    xx = (w1 * (k11 @ w1)).sum(0) - np.diag(k11) @ w1
    yy = (w2 * (k22 @ w2)).sum(0) - np.diag(k22) @ w2
    xy = (w1 * (k12 @ w2)).sum(0)
    return (xx + yy) / (m * (m - 1)) - 2.0 * xy / m**2


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) between feature rows, from |a|² + |b|² - 2 a·b."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def knn_radii(f: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Each row's distance to its k-th nearest other row (the radius of its k-NN ball)."""
    f = _as_features(f, "features")
    if not 1 <= k < f.shape[0]:
        raise ValueError(f"k-NN radii need 1 <= k < N, got k={k} for N={f.shape[0]}")
    out = np.empty(f.shape[0])
    for i in range(0, f.shape[0], chunk):
        d = _distances(f[i : i + chunk], f)
        d[np.arange(d.shape[0]), np.arange(i, i + d.shape[0])] = np.inf  # not the row itself
        out[i : i + chunk] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def manifold_coverage(
    f_ref: np.ndarray, radii: np.ndarray, f_query: np.ndarray, chunk: int = 1024
) -> float:
    """Share of query rows inside the union of the balls around f_ref rows of the given radii."""
    inside = [
        (_distances(f_query[i : i + chunk], f_ref) <= radii[None]).any(1)
        for i in range(0, f_query.shape[0], chunk)
    ]
    return float(np.concatenate(inside).mean())


def precision_recall(f_real: np.ndarray, f_fake: np.ndarray, k: int = 3) -> dict:
    """Kynkäänniemi et al. (2019) precision and recall with k-NN manifolds.

    Precision: share of synthetic rows within the k-NN ball of some real row (fidelity); recall:
    share of real rows within the k-NN ball of some synthetic row (coverage of the real set).
    """
    f1, f2 = _feature_pair(f_real, f_fake)
    return {
        "precision": manifold_coverage(f1, knn_radii(f1, k), f2),
        "recall": manifold_coverage(f2, knn_radii(f2, k), f1),
        "k": int(k),
    }


def paired_features(real, fake, net: nn.Module | None, seed: int, batch: int) -> tuple:
    """(real, fake) as image tensors of one size, the feature net (default: random), their features."""
    real_t, fake_t = as_images(real, "real images"), as_images(fake, "synthetic images")
    check_same_size(real_t, fake_t)
    net = random_feature_net(real_t.shape[-1], seed) if net is None else net
    return real_t, fake_t, net, features(net, real_t, batch), features(net, fake_t, batch)


def space_label(feature_space: str) -> str:
    """How a table names a distance's feature space: random-feature, classifier-feature or Inception."""
    if feature_space.startswith("random-conv"):
        return "random-feature"
    return "Inception" if "inception" in feature_space.lower() else "classifier-feature"


def fid_kid_from_features(
    f_real: np.ndarray,
    f_fake: np.ndarray,
    net: nn.Module,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict:
    """FID, KID (± std), sample counts and the feature space's name from features computed with `net`."""
    kid, kid_std = kernel_inception_distance(f_real, f_fake, kid_subsets, kid_subset_size, seed)
    return {
        "fid": frechet_distance(f_real, f_fake),
        "kid": kid,
        "kid_std": kid_std,
        "n_real": int(f_real.shape[0]),
        "n_fake": int(f_fake.shape[0]),
        "feature_space": str(getattr(net, "feature_space", type(net).__name__)),
    }


def check_same_size(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Real and synthetic images must share one resolution."""
    if real.shape[-2:] != fake.shape[-2:]:
        raise RareganError(
            f"real images are {tuple(real.shape[-2:])} px but synthetic images are "
            f"{tuple(fake.shape[-2:])} px; sample the GAN at the resolution of the real store"
        )


def inception_fid(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    weights_path: str | Path,
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> float:
    """Standard Inception FID (torchmetrics, 2048-d pool features) from a local weights file only.

    `weights_path` is the FID Inception state dict (pt_inception-2015-12-05, as torch-fidelity
    and torchmetrics use); gray images are replicated to RGB. Nothing is ever downloaded.
    torchmetrics reads a local file only through the torch-fidelity package.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise RareganError(
            f"Inception weights file {path} does not exist; give the local FID Inception state "
            "dict (pt_inception-2015-12-05) or leave the Inception FID out"
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise RareganError(
            f"Inception FID with local weights {path} needs the torch-fidelity package, which "
            "is not installed: pip install torch-fidelity (nothing is downloaded), or leave the "
            "Inception FID out"
        ) from None
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    except Exception as exc:  # not a torch file, or not the FID Inception state dict
        raise RareganError(
            f"Inception weights file {path} cannot be loaded as the FID Inception state dict "
            f"({type(exc).__name__}: {exc}); give pt_inception-2015-12-05's weights"
        ) from None
    metric = metric.to(device)
    real_t, fake_t = as_images(real, "real images"), as_images(fake, "synthetic images")
    for images, is_real in ((real_t, True), (fake_t, False)):
        for i in range(0, images.shape[0], batch):
            metric.update(images[i : i + batch].to(device).expand(-1, 3, -1, -1), real=is_real)
    return float(metric.compute())

"""GAN quality and safety metrics for `raregan gan-eval`: FID/KID, memorization, diversity, and
the comparisons with real images the GAN never saw (C2ST, FID/KID, precision/recall, each beside
its real-vs-real baseline).

All functions take uint8 image arrays (N, 1, R, R): the real training images of a class and
the GAN's synthetic images (and held-out real images of the class). The feature space is a trained classifier's penultimate layer
(`classifier_feature_net`) or, by default, a seeded random conv net (`random_feature_net`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from pipelines.errors import RareganError
from pipelines.fidelity.c2st import MIN_PER_SIDE, c2st
from pipelines.fidelity.distances import (
    check_same_size,
    fid_kid_from_features,
    frechet_distance,
    inception_fid,
    kernel_inception_distance,
    paired_features,
    precision_recall,
)
from pipelines.fidelity.features import (
    as_images,
    classifier_feature_net,
    features,
    random_feature_net,
)
from pipelines.fidelity.memorization import (
    NEAR_COPY_QUANTILE,
    NEAR_COPY_SCALE,
    memorized_share,
    near_copy_threshold,
    nearest_real,
    nearest_table,
    save_closest_pairs_png,
)

__all__ = [
    "classifier_feature_net",
    "diversity_report",
    "features",
    "frechet_distance",
    "gan_eval",
    "gan_eval_report",
    "heldout_report",
    "inception_fid",
    "kernel_inception_distance",
    "mean_pairwise_ms_ssim",
    "ms_ssim_settings",
    "near_copy_threshold",
    "nearest_real",
    "random_feature_net",
    "save_closest_pairs_png",
]

# Wang et al.'s five MS-SSIM scale weights, finest scale first.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(size: int) -> tuple[int, tuple[float, ...]]:
    """Gaussian kernel size and scale weights for MS-SSIM on `size`-px images.

    The standard 11-px kernel with 5 scales from 192 px up; below, a 7-px kernel (σ 1.5) with
    as many scales as torchmetrics accepts (3 at 32 px, 4 at 64 px, 5 at 128 px, each scale at
    least 8 px), weighted by the first standard betas renormalized to sum to 1.
    """
    kernel, scales = 11, 5
    if not _ms_ssim_fits(size, kernel, scales):
        kernel = 7
        scales = next((s for s in range(5, 0, -1) if _ms_ssim_fits(size, kernel, s)), 0)
    if scales == 0:
        raise RareganError(f"images of {size} px are too small for MS-SSIM; evaluate at >= 8 px")
    betas = np.asarray(MS_SSIM_BETAS[:scales])
    return kernel, tuple(float(b) for b in betas / betas.sum())


def _ms_ssim_fits(size: int, kernel: int, scales: int) -> bool:
    """torchmetrics' size check, and a coarsest scale of at least 8 px and kernel + 1."""
    coarsest = size // 2 ** (scales - 1)
    return size // max(1, scales - 1) ** 2 > kernel - 1 and coarsest >= max(8, kernel + 1)


def mean_pairwise_ms_ssim(
    images: np.ndarray | torch.Tensor, n_pairs: int = 200, seed: int = 0, batch: int = 64
) -> float:
    """Mean MS-SSIM over `n_pairs` random pairs of distinct images: higher means less diverse."""
    t = as_images(images)
    n = t.shape[0]
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, n_pairs)
    second = (first + rng.integers(1, n, n_pairs)) % n  # never the same index
    kernel, betas = ms_ssim_settings(t.shape[-1])
    scores = []
    for i in range(0, n_pairs, batch):
        a = t[first[i : i + batch]].float() / 255.0
        b = t[second[i : i + batch]].float() / 255.0
        s = multiscale_structural_similarity_index_measure(
            a, b, kernel_size=kernel, betas=betas, data_range=1.0, reduction="none"
        )
        scores.append(s.reshape(-1).double())
    return float(torch.cat(scores).mean())


def diversity_report(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    n_pairs: int = 200,
    seed: int = 0,
) -> dict:
    """Mean pairwise MS-SSIM of real and of synthetic images, and fake/real (> 1: less diverse)."""
    real_t, fake_t = as_images(real, "real images"), as_images(fake, "synthetic images")
    check_same_size(real_t, fake_t)
    ms_real = mean_pairwise_ms_ssim(real_t, n_pairs, seed)
    ms_fake = mean_pairwise_ms_ssim(fake_t, n_pairs, seed)
    kernel, betas = ms_ssim_settings(real_t.shape[-1])
    return {
        "ms_ssim_real": ms_real,
        "ms_ssim_fake": ms_fake,
        "ms_ssim_ratio": ms_fake / ms_real if ms_real > 0 else float("nan"),
        "ms_ssim_pairs": int(n_pairs),
        "ms_ssim_kernel": kernel,
        "ms_ssim_scales": len(betas),
    }


def _memorization_summary(table: pd.DataFrame, quantile: float, scale: float) -> dict:
    return {
        "near_copy_threshold": float(table.attrs["near_copy_threshold"]),
        "threshold_quantile": float(quantile),
        "threshold_scale": float(scale),
        "n_near_copies": int(table["near_copy"].sum()),
        "frac_near_copies": float(table["near_copy"].mean()),
        "min_pixel_rms": float(table["pixel_rms"].min()),
        "median_pixel_rms": float(table["pixel_rms"].median()),
        "max_feature_cosine": float(table["feature_cosine"].max()),
        "median_feature_cosine": float(table["feature_cosine"].median()),
    }


def memorization_report(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    net: nn.Module,
    seed: int = 0,
    quantile: float = NEAR_COPY_QUANTILE,
    scale: float = NEAR_COPY_SCALE,
) -> dict:
    """The memorization summary of `fake` against one set of images a GAN saw (nearest_real)."""
    table = nearest_real(real, fake, net, quantile=quantile, scale=scale, seed=seed)
    return _memorization_summary(table, quantile, scale)


def near_copy_share(report: dict) -> float:
    """The largest share of near copies in a gan-eval report: of the GAN's own training images or
    of any GAN it was fine-tuned from (memorization_sources)."""
    parts = [report.get("memorization", {}), *report.get("memorization_sources", [])]
    shares = [m["frac_near_copies"] for m in parts if "frac_near_copies" in m]
    return max(shares) if shares else float("nan")


def gan_eval(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    net: nn.Module | None = None,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    n_pairs: int = 200,
    quantile: float = NEAR_COPY_QUANTILE,
    scale: float = NEAR_COPY_SCALE,
    inception_weights: str | Path | None = None,
    batch: int = 128,
) -> tuple[dict, pd.DataFrame]:
    """The gan_eval_report dictionary and the nearest_real table, computing features once."""
    real_t, fake_t, net, f_real, f_fake = paired_features(real, fake, net, seed, batch)
    report = {"resolution": int(real_t.shape[-1]), "seed": int(seed)}
    report.update(fid_kid_from_features(f_real, f_fake, net, seed, kid_subsets, kid_subset_size))
    report["kid_subsets"] = int(kid_subsets)
    report["kid_subset_size"] = int(min(kid_subset_size, len(f_real), len(f_fake)))
    report["feature_dim"] = int(f_real.shape[1])
    report["fid_few_samples"] = bool(min(len(f_real), len(f_fake)) <= f_real.shape[1])
    report["inception_fid"] = (
        None if inception_weights is None else inception_fid(real_t, fake_t, inception_weights)
    )
    threshold = near_copy_threshold(real_t, quantile, scale)
    table = nearest_table(real_t, fake_t, f_real, f_fake, threshold)
    report["memorization"] = _memorization_summary(table, quantile, scale)
    report["diversity"] = diversity_report(real_t, fake_t, n_pairs, seed)
    return report, table


def gan_eval_report(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    net: nn.Module | None = None,
    **kwargs,
) -> dict:
    """A JSON-serialisable report: FID/KID, optional Inception FID, memorization, diversity."""
    return gan_eval(real, fake, net, **kwargs)[0]


# the keys heldout_report adds to a GAN's report (None where the comparison was skipped)
HELDOUT_KEYS = (
    "c2st",
    "c2st_real_baseline",
    "precision",
    "recall",
    "pr_real_baseline",
    "memorized",
    "fid_heldout",
    "kid_heldout",
    "kid_heldout_std",
    "fid_real_baseline",
    "kid_real_baseline",
    "kid_real_baseline_std",
)


def _versus_heldout(
    held: torch.Tensor,
    f_held: np.ndarray,
    other: torch.Tensor,
    net: nn.Module,
    name: str,
    seed: int,
    k: int,
    kid: tuple[int, int],
) -> dict:
    """C2ST, FID/KID and precision/recall of one image set against the held-out real images."""
    f_other = features(net, other)
    hint = "sample more images (--n) or use larger --val/--test shares"
    return {
        "c2st": c2st(other, held, seed, names=(name, "held-out real images"), hint=hint),
        **precision_recall(f_held, f_other, k),
        **fid_kid_from_features(f_held, f_other, net, seed, *kid),
    }


def heldout_report(
    train_real: np.ndarray | torch.Tensor,
    heldout: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    net: nn.Module | None = None,
    seed: int = 0,
    k: int = 3,
    kid: tuple[int, int] = (100, 1000),
) -> dict:
    """Synthetic images vs held-out real images, beside the real baseline: the GAN's own training
    originals vs the same held-out images (C2ST, FID/KID, k-NN precision/recall, in `net`'s space).

    Both sides are compared at one size: a seeded subsample of min(N_train, N_fake) of each. A GAN
    trained on fewer than MIN_PER_SIDE originals (a small fraction of a rare class) has no usable
    real-vs-real baseline: the synthetic images are then compared whole, the baseline keys are None
    and "heldout" says why. `kid`: KID's (subsets, subset size).
    """
    held = as_images(heldout, "held-out real images")
    train_t = as_images(train_real, "GAN-train real images")
    fake_t = as_images(fake, "synthetic images")
    check_same_size(held, fake_t)
    check_same_size(held, train_t)
    memorized = memorized_share(train_t, held, fake_t)  # every training image and sample
    with_baseline = len(train_t) >= MIN_PER_SIDE
    n = min(len(train_t), len(fake_t)) if with_baseline else len(fake_t)
    rng = np.random.default_rng(seed)
    train_t = train_t[np.sort(rng.choice(len(train_t), min(n, len(train_t)), replace=False))]
    fake_t = fake_t[np.sort(rng.choice(len(fake_t), n, replace=False))]
    net = random_feature_net(held.shape[-1], seed) if net is None else net
    f_held = features(net, held)
    ours = _versus_heldout(held, f_held, fake_t, net, "synthetic images", seed, k, kid)
    info = {"n_heldout": len(held), "n_compared": n, "pr_k": k}
    if with_baseline:
        base = _versus_heldout(held, f_held, train_t, net, "GAN-train real images", seed, k, kid)
    else:
        base = dict.fromkeys(("c2st", "precision", "recall", "fid", "kid", "kid_std"))
        info["baseline_skipped"] = (
            f"the GAN learned from {len(train_t)} real images, fewer than the {MIN_PER_SIDE} a "
            "two-sample test needs per side: no real-vs-real baseline"
        )
    return {
        "c2st": ours["c2st"],
        "c2st_real_baseline": base["c2st"],
        "precision": ours["precision"],
        "recall": ours["recall"],
        "pr_real_baseline": None
        if base["precision"] is None
        else {"precision": base["precision"], "recall": base["recall"]},
        "memorized": memorized,
        "fid_heldout": ours["fid"],
        "kid_heldout": ours["kid"],
        "kid_heldout_std": ours["kid_std"],
        "fid_real_baseline": base["fid"],
        "kid_real_baseline": base["kid"],
        "kid_real_baseline_std": base["kid_std"],
        "heldout": info,
    }

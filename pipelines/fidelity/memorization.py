"""Memorization check: each synthetic image's nearest real image in pixels and in feature space.

A synthetic image is flagged `near_copy` when its pixel distance to the nearest real image is
below `scale` × the `quantile` of the real set's own leave-one-out nearest-neighbour distances
(defaults 0.5 × the 1st percentile): closer to a training image than all but the very closest
pairs of distinct real X-rays, by a further factor of two. Pixel distance is the per-pixel RMS
of the difference on [0, 1] floats; feature similarity is the cosine of feature vectors
centred on the real set's mean feature.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipelines.errors import RareganError
from pipelines.fidelity.distances import check_same_size
from pipelines.fidelity.features import as_images, features, random_feature_net
from pipelines.runs import atomic_write_bytes

NEAR_COPY_QUANTILE = 0.01
NEAR_COPY_SCALE = 0.5


def _flat(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).float() / 255.0


def pixel_nearest(
    query: torch.Tensor,
    ref: torch.Tensor,
    exclude_self: bool = False,
    chunk: int = 512,
    ref_chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest `ref` image and its per-pixel RMS distance, for each uint8 `query` image.

    Chunked over queries and references (|q|² + |r|² − 2 q·r in float32 per block, a running
    minimum), so memory stays bounded (about (chunk + ref_chunk) × pixels × 4 bytes) whatever the
    set sizes; the winner's distance is then recomputed exactly. `exclude_self` (query is ref) gives
    leave-one-out neighbours.
    """
    n_q, n_r = query.shape[0], ref.shape[0]
    r_sq = torch.cat(
        [_flat(ref[j : j + ref_chunk]).square().sum(1) for j in range(0, n_r, ref_chunk)]
    )
    idx = torch.empty(n_q, dtype=torch.long)
    rms = np.empty(n_q)
    for i in range(0, n_q, chunk):
        q = _flat(query[i : i + chunk])
        best = torch.full((q.shape[0],), float("inf"))
        arg = torch.zeros(q.shape[0], dtype=torch.long)
        for j in range(0, n_r, ref_chunk):
            r = _flat(ref[j : j + ref_chunk])
            d2 = q.square().sum(1, keepdim=True) + r_sq[None, j : j + ref_chunk] - 2.0 * q @ r.T
            if exclude_self:
                rows = torch.arange(q.shape[0])
                cols = rows + i - j
                ok = (cols >= 0) & (cols < r.shape[0])
                d2[rows[ok], cols[ok]] = float("inf")
            value, where = d2.min(1)
            better = value < best
            best[better], arg[better] = value[better], where[better] + j
        idx[i : i + chunk] = arg
        diff = (query[i : i + chunk].flatten(1).double() - ref[arg].flatten(1).double()) / 255.0
        rms[i : i + chunk] = diff.square().mean(1).sqrt().numpy()
    return idx.numpy(), rms


def feature_nearest(
    f_query: np.ndarray, f_ref: np.ndarray, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Most cosine-similar reference vector and that cosine, per query, centred on the ref mean.

    Centring matters: ReLU features are all positive, so raw cosines all sit near 1.
    """
    ref = torch.as_tensor(f_ref, dtype=torch.float64)
    centre = ref.mean(0, keepdim=True)
    r = torch.nn.functional.normalize(ref - centre, dim=1)
    q_all = torch.as_tensor(f_query, dtype=torch.float64) - centre
    q_all = torch.nn.functional.normalize(q_all, dim=1)
    idx, cos = [], []
    for i in range(0, q_all.shape[0], chunk):
        best = (q_all[i : i + chunk] @ r.T).max(1)
        idx.append(best.indices)
        cos.append(best.values)
    return torch.cat(idx).numpy(), torch.cat(cos).numpy()


MEMORIZED_QUANTILE = 0.01


def memorized_share(
    train: torch.Tensor,
    heldout: torch.Tensor,
    fake: torch.Tensor,
    quantile: float = MEMORIZED_QUANTILE,
) -> dict:
    """The share of samples closer to a training image than all but `quantile` of real held-out
    images are (pixel RMS to the nearest training image; the threshold is that quantile of the
    held-out images' nearest-training distances): a generator that does not copy puts about
    `quantile` of its samples there, as held-out images do; memorization puts more (Dar et al. 2024
    found up to a third of small chest X-ray training sets copied by latent diffusion)."""
    train, heldout, fake = (as_images(x, name) for x, name in
                            ((train, "training images"), (heldout, "held-out images"), (fake, "samples")))  # fmt: skip
    _, d_held = pixel_nearest(heldout, train)
    _, d_fake = pixel_nearest(fake, train)
    threshold = float(np.quantile(d_held, quantile))
    return {
        "share": float(np.mean(d_fake < threshold)),
        "threshold": threshold,
        "quantile": quantile,
        "n_samples": int(len(d_fake)),
        "n_heldout": int(len(d_held)),
        "n_train": int(len(train)),
    }


def near_copy_threshold(
    real: np.ndarray | torch.Tensor,
    quantile: float = NEAR_COPY_QUANTILE,
    scale: float = NEAR_COPY_SCALE,
) -> float:
    """`scale` × the `quantile` of leave-one-out real-to-real nearest-neighbour pixel RMS.

    Exact duplicates inside the real set (distance 0) are left out of the quantile.
    """
    if not 0.0 <= quantile <= 1.0 or scale <= 0:
        raise RareganError(f"near-copy quantile {quantile} / scale {scale}: need 0<=q<=1, scale>0")
    real_t = as_images(real, "real images")
    _, d = pixel_nearest(real_t, real_t, exclude_self=True)
    d = d[d > 0]
    return float(scale * np.quantile(d, quantile)) if d.size else 0.0


def nearest_table(
    real: torch.Tensor,
    fake: torch.Tensor,
    f_real: np.ndarray,
    f_fake: np.ndarray,
    threshold: float,
) -> pd.DataFrame:
    """The nearest_real table from checked images and features already computed."""
    pix_idx, pix_rms = pixel_nearest(fake, real)
    feat_idx, feat_cos = feature_nearest(f_fake, f_real)
    table = pd.DataFrame(
        {
            "fake_index": np.arange(fake.shape[0]),
            "real_index": pix_idx,
            "pixel_rms": pix_rms,
            "feature_real_index": feat_idx,
            "feature_cosine": feat_cos,
            "near_copy": pix_rms < threshold,
        }
    )
    table.attrs["near_copy_threshold"] = float(threshold)
    return table


def nearest_real(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    net: nn.Module | None = None,
    threshold: float | None = None,
    quantile: float = NEAR_COPY_QUANTILE,
    scale: float = NEAR_COPY_SCALE,
    seed: int = 0,
) -> pd.DataFrame:
    """Per synthetic image: nearest real image in pixels (RMS) and in features (cosine), near_copy.

    Columns: fake_index, real_index, pixel_rms, feature_real_index, feature_cosine, near_copy.
    `threshold` (pixel RMS) defaults to near_copy_threshold(real, quantile, scale); it is kept in
    `table.attrs["near_copy_threshold"]`. `net` defaults to random_feature_net(R, seed).
    """
    real_t, fake_t = as_images(real, "real images"), as_images(fake, "synthetic images")
    check_same_size(real_t, fake_t)
    net = random_feature_net(real_t.shape[-1], seed) if net is None else net
    if threshold is None:
        threshold = near_copy_threshold(real_t, quantile, scale)
    return nearest_table(real_t, fake_t, features(net, real_t), features(net, fake_t), threshold)


def save_closest_pairs_png(
    path: str | Path,
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    k: int = 16,
    per_row: int = 4,
) -> None:
    """A grid of the `k` closest (synthetic, nearest real) pairs by pixel RMS, near copies in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_t, fake_t = as_images(real, "real images"), as_images(fake, "synthetic images")
    top = table.nsmallest(min(k, len(table)), "pixel_rms")
    n_rows = max(1, -(-len(top) // per_row))
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(1.5 * 2 * per_row, 1.8 * n_rows))
    axes = np.atleast_2d(axes)
    for ax in axes.flat:
        ax.axis("off")
    for n, row in enumerate(top.itertuples()):
        r, c = divmod(n, per_row)
        color = "red" if row.near_copy else "black"
        pair = (
            (fake_t[row.fake_index, 0], f"syn {row.fake_index}\nrms {row.pixel_rms:.3f}"),
            (real_t[row.real_index, 0], f"nearest real\n{row.real_index}"),
        )
        for j, (img, title) in enumerate(pair):
            ax = axes[r, 2 * c + j]
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(title, fontsize=7, color=color)
    thr = table.attrs.get("near_copy_threshold")
    suffix = f" (red: rms < {thr:.3f})" if thr is not None else ""
    fig.suptitle(f"closest synthetic / real pairs{suffix}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())

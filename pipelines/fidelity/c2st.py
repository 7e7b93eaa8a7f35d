"""Classifier two-sample test (Lopez-Paz & Oquab 2017): can a small CNN tell two image sets apart?

Equal numbers of each set (a seeded subsample of the larger), 5 stratified folds; per fold a small
CNN (4x4 patches, then two stride-2 3x3 convolutions, 16 to 64 channels, at the images' own size)
is trained with Adam for 30 epochs on the other folds and scored on the held-out fold. The result
is the mean of the fold AUCs with a 95 % t-interval over folds, and the mean fold accuracy: AUC 0.5
means indistinguishable, 1.0 perfectly separable. The fit is a plain in-memory loop on one CPU
thread (2 to 3 s per fold for 2 x 136 images at 64 px; one thread is several times faster than two
for so small a net, and the result does not depend on the machine's thread count): Lightning's
Trainer would cost more than the fit itself.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats
import torch
from torch import nn
from torch.nn import functional as F

from classify.metrics import auc
from pipelines.errors import RareganError
from pipelines.fidelity.distances import check_same_size
from pipelines.fidelity.features import as_images

MIN_PER_SIDE = 20  # below this, 5 folds hold under 4 images of a side each: no usable estimate
FOLDS = 5
EPOCHS = 30
LR = 2e-3


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index per item: each label's items shuffled and dealt round-robin over the folds."""
    fold = np.empty(len(y), dtype=int)
    for label in np.unique(y):
        where = rng.permutation(np.flatnonzero(y == label))
        fold[where] = np.arange(len(where)) % folds
    return fold


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean (clipped to [0, 1], as AUCs are)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    half = scipy.stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return mean, float(max(0.0, mean - half)), float(min(1.0, mean + half))


def _network() -> nn.Module:
    """4x4 patches (stride 4) → 16 channels, then stride-2 conv3x3 to 32, 64; ReLUs, pool, a logit."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=4), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1),
    )  # fmt: skip


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as channels-last floats in [-1, 1]."""
    return (x.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def _fit_and_score(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, seed: int, epochs: int
) -> np.ndarray:
    """Train a fresh seeded CNN (Adam, batches of 32, one thread) on uint8 images; test logits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _network().to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                for idx in torch.randperm(len(x_train), generator=gen).split(32):
                    logit = net(_scaled(x_train[idx])).squeeze(1)
                    loss = F.binary_cross_entropy_with_logits(logit, y_train[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.inference_mode():
                return net(_scaled(x_test)).squeeze(1).double().numpy()
    finally:
        torch.set_num_threads(threads)


def c2st(
    first: np.ndarray | torch.Tensor,
    second: np.ndarray | torch.Tensor,
    seed: int = 0,
    folds: int = FOLDS,
    epochs: int = EPOCHS,
    names: tuple[str, str] = ("first set", "second set"),
    hint: str = "give more images",
) -> dict:
    """Held-out AUC of a CNN separating two uint8 image sets: mean over folds, t-interval, accuracy."""
    a, b = as_images(first, names[0]), as_images(second, names[1])
    check_same_size(a, b)
    for images, name in ((a, names[0]), (b, names[1])):
        if len(images) < MIN_PER_SIDE:
            raise RareganError(
                f"the classifier two-sample test needs at least {MIN_PER_SIDE} images per side, "
                f"but the {name} has {len(images)}; {hint}"
            )
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a = a[np.sort(rng.choice(len(a), n, replace=False))]
    b = b[np.sort(rng.choice(len(b), n, replace=False))]
    x = torch.cat([a, b])
    y = np.r_[np.zeros(n), np.ones(n)]
    fold = stratified_folds(y, folds, rng)
    aucs, accuracies = [], []
    for k in range(folds):
        test = fold == k
        logits = _fit_and_score(
            x[~test], torch.from_numpy(y[~test]).float(), x[test], seed * 1000 + k, epochs
        )
        aucs.append(auc(y[test], logits))
        accuracies.append(float(((logits > 0) == (y[test] > 0.5)).mean()))
    mean, low, high = t_interval(aucs)
    return {
        "auc": mean,
        "ci_low": low,
        "ci_high": high,
        "accuracy": float(np.mean(accuracies)),
        "n_per_side": int(n),
        "folds": int(folds),
        "fold_aucs": [float(v) for v in aucs],
        "epochs": int(epochs),
        "method": f"mean of {folds} fold AUCs, 95 % t-interval",
    }

"""One classifier run's figures: ROC curves, confusion matrix, prediction and Grad-CAM grids.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot state, no display),
rendered to PNG without timestamp metadata and written atomically: the same inputs give the same
bytes. Inputs are numpy arrays (or CPU tensors); labels and classes are carried by name.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from classify.calibration import brier_score, expected_calibration_error, reliability_bins
from classify.gradcam import gradcam, overlay
from classify.metrics import auc
from pipelines.errors import RareganError
from pipelines.images import save_figure

CORRECT, WRONG = "#1a9850", "#d73027"
THIN, THICK = 1.3, 3.0


def _as_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (N, 1, R, R) as a numpy array, or ValueError naming the shape or dtype."""
    arr = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images)
    if arr.ndim != 4 or arr.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, R, R), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    return arr


def _wrap(text: str, width: int) -> str:
    """Wrap a caption to lines of at most `width` characters."""
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _grid(n: int, ncol: int, cell: tuple[float, float], title: str) -> tuple[Figure, np.ndarray]:
    """A figure of max(n, 1) cells in rows of `ncol` with a title; axes off (N, ...) ravelled."""
    ncol = max(1, min(ncol, max(n, 1)))
    nrow = -(-max(n, 1) // ncol)
    fig = Figure(figsize=(cell[0] * ncol, cell[1] * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    if n == 0:
        axes[0].text(0.5, 0.5, "no images to show", ha="center", va="center")
    return fig, axes


# ---------------------------------------------------------------------------------------- ROC


def roc_reason(y: np.ndarray) -> str | None:
    """Why a label's ROC is undefined ('no positives' / 'no negatives'; NaN dropped), else None."""
    y = np.asarray(y, dtype=np.float64)
    y = y[~np.isnan(y)]
    if not (y > 0.5).any():
        return "no positives"
    if (y > 0.5).all():
        return "no negatives"
    return None


def roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC (fpr, tpr, thresholds) from (0, 0), one point per distinct score; NaN labels dropped.

    Tied scores form one step (a diagonal segment when the tie mixes classes), so the trapezoid
    area under the points equals the Mann-Whitney AUC with ties counted one half.
    """
    y, s = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be equal 1-D shapes")
    keep = ~np.isnan(y)
    reason = roc_reason(y)
    if reason is not None:
        raise ValueError(f"ROC is undefined: {reason}")
    pos, s = y[keep] > 0.5, s[keep]
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite where the label is known")
    order = np.argsort(-s, kind="stable")
    pos, s = pos[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each tie group
    tp, fp = np.cumsum(pos)[last], np.cumsum(~pos)[last]
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_figure(
    y: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    highlight: Sequence[str] = (),
    title: str = "ROC on the test set",
) -> Figure:
    """One ROC curve per label (AUC in the legend), the chance diagonal, `highlight` drawn thick.

    Labels without both classes among the known entries are not drawn; the legend lists them as
    '<label>: no AUC: no positives' (or 'no negatives').
    """
    y, s = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    names = [str(n) for n in label_names]
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(names):
        raise ValueError(
            f"labels {y.shape} and scores {s.shape} must both be (N, {len(names)}) for {names}"
        )
    unknown = [h for h in highlight if h not in names]
    if unknown:
        raise RareganError(
            f"highlighted class {unknown[0]!r} is not a label of this run ({', '.join(names)});"
            " name one of those"
        )
    fig = Figure(figsize=(8.6, 5.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.55", label="chance (AUC 0.5)")
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for j, name in enumerate(names):
        reason = roc_reason(y[:, j])
        if reason is not None:
            ax.plot([], [], ls="none", label=f"{name}: no AUC: {reason}")  # listed, not drawn
            continue
        fpr, tpr, _ = roc_points(y[:, j], s[:, j])
        thick = name in highlight
        ax.plot(
            fpr,
            tpr,
            color=palette(j % palette.N),
            lw=THICK if thick else THIN,
            zorder=3 if thick else 2,
            label=f"{name}{' (rare)' if thick else ''}: AUC {auc(y[:, j], s[:, j]):.3f}",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.005), aspect="equal", title=title)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


def roc_curves(path: Path | str, *args, **kwargs) -> Path:
    """Write `roc_figure(*args, **kwargs)` as PNG; y (N, L) with NaN unknown, scores (N, L)."""
    return save_figure(roc_figure(*args, **kwargs), path)


# ---------------------------------------------------------------------------------- confusion


def confusion_cell_texts(cm: np.ndarray) -> list[list[str]]:
    """Cell captions 'count\\npercent of the true row' ('–' for an empty row)."""
    cm = np.asarray(cm)
    texts = []
    for row in cm:
        total = int(row.sum())
        texts.append(
            [f"{int(c)}\n{100.0 * c / total:.1f} %" if total else f"{int(c)}\n–" for c in row]
        )
    return texts


def confusion_png(path: Path | str, cm: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    """Confusion matrix (true on y, predicted on x): counts and row percentages, rows shaded."""
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} class names")
    totals = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    side = max(4.0, 0.95 * k + 2.2)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    size = 9 if k <= 6 else 7
    for i, row in enumerate(confusion_cell_texts(cm)):
        for j, text in enumerate(row):
            colour = "white" if frac[i, j] > 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)
    ticks = [_wrap(n, 14) for n in class_names]
    ax.set_xticks(range(k), ticks, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (n = {int(cm.sum())})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return save_figure(fig, path)


# -------------------------------------------------------------------------------------- grids


def prediction_grid(
    path: Path | str,
    images: np.ndarray | torch.Tensor,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    correct: Sequence[bool],
    title: str,
    ncol: int = 8,
) -> Path:
    """Test images captioned 'pred / true', green (and framed green) when correct, red when wrong."""
    imgs = _as_images(images)
    n = len(imgs)
    if not (len(true_names) == len(pred_names) == len(correct) == n):
        raise ValueError(
            f"{n} images need as many captions: got {len(true_names)} true,"
            f" {len(pred_names)} predicted, {len(correct)} correct flags"
        )
    fig, axes = _grid(n, ncol, (1.6, 1.95), title)
    for ax, img, t, p, ok in zip(axes, imgs, true_names, pred_names, correct, strict=False):
        colour = CORRECT if bool(ok) else WRONG
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{_wrap(p, 22)} /\n{_wrap(t, 22)}", fontsize=7, color=colour)
        for spine in ax.spines.values():
            spine.set_color(colour)
            spine.set_linewidth(2.0)
    return save_figure(fig, path)


def gradcam_grid(
    path: Path | str,
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    target_index: int,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    title: str,
    captions: Sequence[str] = (),
    ncol: int = 4,
    outputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """Image | Grad-CAM overlay pairs (`ncol` pairs a row) for output `target_index` (of the
    logits, or of `outputs(logits)`, see classify.gradcam).

    `normalize` maps a uint8 (N, 1, R, R) tensor to the model's float input; `captions` (optional,
    one per image, e.g. the score) go above each pair.
    """
    imgs = _as_images(images)
    n = len(imgs)
    if captions and len(captions) != n:
        raise ValueError(f"{n} images need {n} captions, got {len(captions)}")
    cams = np.zeros((0, *imgs.shape[2:]))
    if n:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = normalize(torch.from_numpy(np.ascontiguousarray(imgs)).to(device))
        cams = gradcam(model, x, int(target_index), outputs=outputs).cpu().numpy()
    fig, axes = _grid(2 * n, 2 * ncol, (1.6, 1.75), title)
    for i, (img, cam) in enumerate(zip(imgs, cams, strict=True)):
        left, right = axes[2 * i], axes[2 * i + 1]
        left.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        right.imshow(overlay(img[0], cam), interpolation="nearest")
        left.set_title(_wrap(captions[i], 22) if captions else f"image {i + 1}", fontsize=7)
        right.set_title("Grad-CAM", fontsize=7)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------ distribution


def label_distribution_png(
    path: Path | str,
    true_counts: Sequence[int] | np.ndarray,
    pred_counts: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> Path:
    """Side-by-side bars of the true and the predicted class counts (percent above each bar)."""
    t = np.asarray(true_counts, dtype=np.int64)
    p = np.asarray(pred_counts, dtype=np.int64)
    k = len(class_names)
    if t.shape != (k,) or p.shape != (k,):
        raise ValueError(f"counts {t.shape} and {p.shape} must both be ({k},) for {k} classes")
    x = np.arange(k)
    fig = Figure(figsize=(max(5.0, 0.9 * k + 2.5), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for counts, dx, colour, name in (
        (t, -0.2, "#4d4d4d", "true"),
        (p, 0.2, "#d95f02", "predicted"),
    ):
        bars = ax.bar(x + dx, counts, width=0.4, color=colour, label=f"{name} (n = {counts.sum()})")
        share = 100.0 * counts / max(int(counts.sum()), 1)
        ax.bar_label(bars, [f"{v:.0f} %" for v in share], fontsize=7, padding=1)
    ax.set_xticks(x, [_wrap(n, 14) for n in class_names], rotation=45 if k > 6 else 0)
    ax.set_ylabel("test images")
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------- calibration


def reliability_figure(
    y: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    n_bins: int = 10,
    title: str = "reliability on the test set",
) -> Figure:
    """One panel per label: observed positive fraction vs mean predicted probability in `n_bins`
    equal-width bins (marker area ∝ images), the diagonal, ECE and Brier score in the title."""
    y, s = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    names = [str(n) for n in label_names]
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(names):
        raise ValueError(
            f"labels {y.shape} and scores {s.shape} must both be (N, {len(names)}) for {names}"
        )
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig = Figure(figsize=(3.0 * ncol, 3.0 * nrow + 0.5), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for j, (ax, name) in enumerate(zip(axes, names, strict=False)):
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.55")
        bins = reliability_bins(y[:, j], s[:, j], n_bins)
        full = bins[bins["n"] > 0]
        area = 120.0 * full["n"] / max(int(full["n"].sum()), 1) + 8.0
        ax.plot(full["mean_score"], full["frac_pos"], color="#d95f02", lw=THIN)
        ax.scatter(full["mean_score"], full["frac_pos"], s=area, color="#d95f02", zorder=3)
        ece, brier = (
            expected_calibration_error(y[:, j], s[:, j], n_bins),
            brier_score(y[:, j], s[:, j]),
        )
        stats = "no labels" if ece is None else f"ECE {ece:.3f}, Brier {brier:.3f}"
        ax.set_title(f"{_wrap(name, 24)}\n{stats}", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes[::ncol]:
        ax.set_ylabel("fraction positive", fontsize=8)
    for ax in axes[(nrow - 1) * ncol :]:
        ax.set_xlabel("mean predicted probability", fontsize=8)
    fig.suptitle(f"{title} ({n_bins} equal-width bins; marker area ∝ images)", fontsize=10)
    return fig


def reliability_png(path: Path | str, *args, **kwargs) -> Path:
    """Write `reliability_figure(*args, **kwargs)` as PNG."""
    return save_figure(reliability_figure(*args, **kwargs), path)

"""Classifier-run figures: ROC points vs hand and reference values, valid deterministic PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_roc

from classify.metrics import auc_with_ci
from classify.models import build_model
from pipelines.classifier import plots as cp
from pipelines.errors import RareganError


def _check_png(path, min_w: int = 300, min_h: int = 250) -> np.ndarray:
    """A readable PNG of plausible size with real content (not one flat colour); its pixels."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        arr = np.asarray(im.convert("L"))
    assert min_w <= w <= 4000 and min_h <= h <= 4000
    assert path.stat().st_size > 5_000
    assert (arr < 200).mean() > 0.01  # ink on the page
    assert len(np.unique(arr)) > 10
    return arr


def test_roc_points_hand_example_with_ties() -> None:
    # sorted: 0.9 pos | 0.8 neg, 0.8 pos (tie) | 0.3 neg | 0.1 pos; the NaN label is dropped
    y = np.array([1, 0, 1, 0, 1, np.nan])
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.1, 0.95])
    fpr, tpr, thr = cp.roc_points(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.3, 0.1])
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(
        7 / 12
    )  # Mann-Whitney with the tie as 1/2


def test_roc_points_match_torchmetrics_and_the_bootstrap_auc() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(float)
    s = np.round(np.clip(0.3 * y + rng.random(300), 0, 1), 1)  # heavy ties
    fpr, tpr, _ = cp.roc_points(y, s)
    ref_fpr, ref_tpr, _ = binary_roc(torch.tensor(s), torch.tensor(y).long())
    np.testing.assert_allclose(fpr, ref_fpr.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(tpr, ref_tpr.double().numpy(), atol=1e-6)
    ref_auc = auc_with_ci(y, s, None, n_boot=2)["auc"]
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(ref_auc, abs=1e-12)


def test_perfect_scorer_passes_through_top_left() -> None:
    y = np.array([0, 0, 1, 1, 0, 1.0])
    fpr, tpr, _ = cp.roc_points(y, np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7]))
    assert np.any((fpr == 0) & (tpr == 1))
    assert float(np.trapezoid(tpr, fpr)) == 1.0


def test_roc_undefined_labels() -> None:
    assert cp.roc_reason(np.array([0, 0, np.nan])) == "no positives"
    assert cp.roc_reason(np.array([1, np.nan, 1])) == "no negatives"
    assert cp.roc_reason(np.array([1, 0])) is None
    with pytest.raises(ValueError, match="no positives"):
        cp.roc_points(np.array([0.0, 0.0, np.nan]), np.array([0.2, 0.4, 0.9]))


def _multilabel(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.4, 0.1, 0.0]).astype(float)  # label 2 has no positives
    y[rng.random((n, 3)) < 0.1] = np.nan
    s = np.clip(0.4 * np.nan_to_num(y) + 0.6 * rng.random((n, 3)), 0, 1)
    return y, s


def test_roc_figure_lists_undefined_labels_and_thickens_rare_ones() -> None:
    y, s = _multilabel()
    fig = cp.roc_figure(y, s, ["Effusion", "Hernia", "Fracture"], highlight=["Hernia"])
    ax = fig.axes[0]
    drawn = {ln.get_label(): ln for ln in ax.lines if len(ln.get_xdata())}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Fracture: no AUC: no positives" in legend
    assert not any(lbl.startswith("Fracture") for lbl in drawn)
    fpr, tpr, _ = cp.roc_points(y[:, 1], s[:, 1])
    hernia = drawn[f"Hernia (rare): AUC {float(np.trapezoid(tpr, fpr)):.3f}"]
    np.testing.assert_allclose(hernia.get_xdata(), fpr)
    effusion = next(ln for lbl, ln in drawn.items() if lbl.startswith("Effusion: AUC"))
    assert hernia.get_linewidth() > effusion.get_linewidth()
    assert any(lbl.startswith("chance") for lbl in drawn)  # the diagonal
    with pytest.raises(RareganError, match="'Hernias'"):
        cp.roc_figure(y, s, ["Effusion", "Hernia", "Fracture"], highlight=["Hernias"])


def test_roc_curves_png_is_valid_and_deterministic(tmp_path) -> None:
    y, s = _multilabel()
    names = ["Effusion", "Hernia", "Fracture"]
    a = cp.roc_curves(tmp_path / "a.png", y, s, names, highlight=["Hernia"])
    b = cp.roc_curves(tmp_path / "b.png", y, s, names, highlight=["Hernia"])
    _check_png(a)
    assert a.read_bytes() == b.read_bytes()


def test_confusion_cell_texts_use_counts_and_row_percentages() -> None:
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    texts = cp.confusion_cell_texts(cm)
    assert texts[0] == ["3\n75.0 %", "1\n25.0 %", "0\n0.0 %"]
    assert texts[1] == ["0\n–", "0\n–", "0\n–"]
    assert texts[2] == ["2\n25.0 %", "2\n25.0 %", "4\n50.0 %"]


def test_confusion_png(tmp_path) -> None:
    cm = np.array([[50, 3, 1], [7, 20, 2], [0, 4, 9]])
    names = ["KL 0", "KL 1", "KL 2"]
    a = cp.confusion_png(tmp_path / "c.png", cm, names, "test")
    _check_png(a)
    assert a.read_bytes() == cp.confusion_png(tmp_path / "d.png", cm, names, "test").read_bytes()
    with pytest.raises(ValueError, match="3 class names"):
        cp.confusion_png(tmp_path / "e.png", cm[:2, :2], names, "test")


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = (255 * (xx + yy) / (2 * size)).astype(np.float64)
    noise = rng.integers(0, 60, size=(n, 1, size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_prediction_grid(tmp_path) -> None:
    imgs = _images(10)
    true = ["Normal", "Pneumonia, Effusion and a very long label name"] * 5
    pred = ["Normal", "Normal"] * 5
    ok = [True, False] * 5
    a = cp.prediction_grid(tmp_path / "p.png", imgs, true, pred, ok, "predicted / true", ncol=4)
    arr = np.asarray(Image.open(a).convert("RGB")).astype(int)
    _check_png(a)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    assert ((g > 120) & (r < 80) & (b < 120)).sum() > 50  # green frames/captions for correct
    assert ((r > 180) & (g < 90) & (b < 90)).sum() > 50  # red for wrong
    again = cp.prediction_grid(tmp_path / "q.png", imgs, true, pred, ok, "predicted / true", ncol=4)
    assert a.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError, match="10 images need as many captions"):
        cp.prediction_grid(tmp_path / "r.png", imgs, true[:9], pred, ok, "t")
    with pytest.raises(ValueError, match="uint8"):
        cp.prediction_grid(tmp_path / "r.png", imgs.astype(float), true, pred, ok, "t")


def test_gradcam_grid_with_a_tiny_cnn(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn5", 2).train()
    imgs = _images(3)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - 0.449) / 0.226

    a = cp.gradcam_grid(tmp_path / "g.png", model, imgs, 1, normalize, "Grad-CAM", ncol=2)
    b = cp.gradcam_grid(
        tmp_path / "h.png", model, torch.from_numpy(imgs), 1, normalize, "Grad-CAM", ncol=2
    )
    _check_png(a, min_w=250, min_h=200)
    assert a.read_bytes() == b.read_bytes()
    assert model.training  # gradcam restores the mode
    rgb = np.asarray(Image.open(a).convert("RGB")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).sum() > 100  # coloured overlays present
    caps = ["score 0.91", "score 0.80", "score 0.75"]
    cp.gradcam_grid(tmp_path / "c.png", model, imgs, 0, normalize, "t", captions=caps)
    empty = cp.gradcam_grid(tmp_path / "e.png", model, imgs[:0], 0, normalize, "none found")
    assert empty.stat().st_size > 1_000


def test_label_distribution_png(tmp_path) -> None:
    names = ["KL 0", "KL 1", "KL 2", "KL 3", "KL 4"]
    a = cp.label_distribution_png(
        tmp_path / "l.png", [40, 20, 25, 10, 5], [80, 0, 20, 0, 0], names, "t"
    )
    _check_png(a)
    again = cp.label_distribution_png(
        tmp_path / "m.png", [40, 20, 25, 10, 5], [80, 0, 20, 0, 0], names, "t"
    )
    assert a.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError, match="5 classes"):
        cp.label_distribution_png(tmp_path / "n.png", [1, 2], [2, 1], names, "t")


def test_reliability_figure_shows_the_bins_ece_and_brier(tmp_path) -> None:
    from classify.calibration import brier_score, expected_calibration_error, reliability_bins

    rng = np.random.default_rng(1)
    s = rng.random((300, 3))
    y = (rng.random((300, 3)) < s).astype(float)
    y[:10, 1] = np.nan
    names = ["Fracture", "Lung Lesion", "Pleural Other"]
    fig = cp.reliability_figure(y, s, names, n_bins=5)
    for j, ax in enumerate(fig.axes[:3]):
        bins = reliability_bins(y[:, j], s[:, j], 5)
        line = [ln for ln in ax.lines if ln.get_linestyle() != "--"][0]
        assert np.allclose(line.get_xdata(), bins["mean_score"]) and np.allclose(
            line.get_ydata(), bins["frac_pos"]
        )
        ece, brier = expected_calibration_error(y[:, j], s[:, j], 5), brier_score(y[:, j], s[:, j])
        assert f"ECE {ece:.3f}, Brier {brier:.3f}" in ax.get_title()
    assert "5 equal-width bins" in fig._suptitle.get_text()
    path = cp.reliability_png(tmp_path / "r.png", y, s, names, n_bins=5)
    _check_png(path)
    again = cp.reliability_png(tmp_path / "r2.png", y, s, names, n_bins=5)
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="must both be"):
        cp.reliability_figure(y, s[:, :2], names)

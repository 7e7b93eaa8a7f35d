"""Calibration and operating points of a binary score: Brier score, reliability bins, ECE, Youden's
threshold and sensitivity / specificity at a threshold. Labels may be NaN (unknown): those are dropped."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from classify.metrics import check_shapes


def _known(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Labels (as 0/1) and scores where the label is known (NaN dropped)."""
    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    check_shapes(y, s)
    keep = ~np.isnan(y)
    return (y[keep] > 0.5).astype(np.float64), s[keep]


def brier_score(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float | None:
    """Mean squared difference between probability and outcome (0/1), NaN labels dropped; None if none."""
    y, s = _known(y_true, scores)
    return float(np.mean((s - y) ** 2)) if y.size else None


def reliability_bins(
    y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray, n_bins: int = 10
) -> pd.DataFrame:
    """Equal-width probability bins [k/n, (k+1)/n) (the last one closed at 1): lo, hi, n,
    mean_score, frac_pos per bin (NaN means in an empty bin); NaN labels dropped."""
    y, s = _known(y_true, scores)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.floor(s * n_bins).astype(np.int64), 0, n_bins - 1)
    n = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(idx, weights=s, minlength=n_bins) / n
        frac_pos = np.bincount(idx, weights=y, minlength=n_bins) / n
    frame = {"lo": edges[:-1], "hi": edges[1:], "n": n, "mean_score": mean_score}
    return pd.DataFrame(frame | {"frac_pos": frac_pos})


def expected_calibration_error(
    y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray, n_bins: int = 10
) -> float | None:
    """ECE over `n_bins` equal-width bins: Σ (n_b / N)·|frac_pos_b − mean_score_b|; None if no label."""
    bins = reliability_bins(y_true, scores, n_bins)
    full = bins[bins["n"] > 0]
    if full.empty:
        return None
    gap = (full["frac_pos"] - full["mean_score"]).abs()
    return float((full["n"] * gap).sum() / full["n"].sum())


def youden_threshold(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> dict:
    """The score threshold t maximizing Youden's J = sensitivity + specificity − 1, where a score
    ≥ t is called positive; candidates are the distinct scores, ties go to the highest t.
    Returns dict(threshold, j, reason); threshold None with a reason when a class is absent."""
    y, s = _known(y_true, scores)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if not n_pos or not n_neg:
        return {"threshold": None, "j": None, "reason": "no negatives" if n_pos else "no positives"}
    order = np.argsort(-s, kind="stable")
    s_sorted, pos = s[order], y[order] > 0.5
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s) - 1]  # each tie group's end
    j = np.cumsum(pos)[last] / n_pos - np.cumsum(~pos)[last] / n_neg
    best = int(np.argmax(j))  # first maximum = highest threshold
    return {"threshold": float(s_sorted[last[best]]), "j": float(j[best]), "reason": None}


def threshold_metrics(
    y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray, threshold: float
) -> dict:
    """Sensitivity and specificity when a score ≥ `threshold` is called positive (NaN labels
    dropped; None where a class is absent), with tp, fp, fn, tn."""
    y, s = _known(y_true, scores)
    t, p = y > 0.5, s >= threshold
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }

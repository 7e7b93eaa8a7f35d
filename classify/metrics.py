"""Test-set metrics with patient-level (cluster) bootstrap confidence intervals.

A bootstrap resample draws the test set's *patients* with replacement and keeps all images of each
drawn patient (images of one patient are not independent). A resample is a vector of patient
multiplicities; an image's weight is its patient's multiplicity, and the weighted AUC is the
Mann-Whitney statistic with those weights, computed for all resamples at once from the tie groups
of the sorted scores (a sparse patient × tie-group count matrix times the multiplicity matrix).
Percentile intervals. The same seed gives the same resamples for every label and every model, so
per-label, macro, micro and paired (model b − model a) statistics share their resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

_CHUNK_ELEMS = 4_000_000  # bound on (tie groups × resamples) per matrix chunk


class PatientBootstrap:
    """Seeded patient resamples over a fixed test set; weighted AUCs for all of them at once."""

    def __init__(
        self, groups: Sequence | np.ndarray | None, n: int, n_boot: int = 1000, seed: int = 0
    ):
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
        _, self.codes = np.unique(groups, return_inverse=True)
        self.n_groups = int(self.codes.max()) + 1 if n else 0
        self.n_boot, self.seed = int(n_boot), int(seed)

    def multiplicities(self, chunk: int) -> Iterator[np.ndarray]:
        """Patient multiplicity matrices (b, G) of `chunk` resamples at a time, same per seed."""
        rng = np.random.default_rng(self.seed)
        g = self.n_groups
        for start in range(0, self.n_boot, chunk):
            b = min(chunk, self.n_boot - start)
            draws = rng.integers(0, g, size=(b, g)) + (np.arange(b) * g)[:, None]
            yield np.bincount(draws.ravel(), minlength=b * g).reshape(b, g).astype(np.float64)

    def aucs(
        self, y: np.ndarray, s: np.ndarray, keep: np.ndarray, codes: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """Point AUC and bootstrap AUCs (n_boot,) of items `keep` (NaN where a class is absent)."""
        codes = (self.codes if codes is None else codes)[keep]
        pos = np.asarray(y[keep]) > 0.5
        tie = _runs(np.unique(np.asarray(s[keep], dtype=np.float64), return_inverse=True)[1], pos)
        shape = (int(tie.max()) + 1 if tie.size else 0, self.n_groups)
        cnt_pos = sparse.csr_matrix((pos.astype(float), (tie, codes)), shape=shape)
        cnt_neg = sparse.csr_matrix(((~pos).astype(float), (tie, codes)), shape=shape)
        point = _weighted_auc(cnt_pos, cnt_neg, np.ones((self.n_groups, 1)))[0]
        chunk = max(1, min(self.n_boot, _CHUNK_ELEMS // max(shape[0], self.n_groups, 1)))
        boot = [_weighted_auc(cnt_pos, cnt_neg, m.T) for m in self.multiplicities(chunk)]
        return point, np.concatenate(boot) if boot else np.empty(0)

    def kappas(
        self, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
    ) -> tuple[float, np.ndarray]:
        """Point quadratic weighted kappa and its values (n_boot,) on the patient resamples: each
        resample's confusion matrix is the patients' own matrices weighted by their multiplicity."""
        cells = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
        k2 = num_classes**2
        per_patient = np.zeros((self.n_groups, k2))
        np.add.at(per_patient, (self.codes, cells), 1.0)
        point = _kappas(per_patient.sum(axis=0, keepdims=True), num_classes)[0]
        chunk = max(1, min(self.n_boot, _CHUNK_ELEMS // max(self.n_groups, k2, 1)))
        boot = [_kappas(m @ per_patient, num_classes) for m in self.multiplicities(chunk)]
        return point, np.concatenate(boot) if boot else np.empty(0)


def _runs(tie: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Merge adjacent tie groups of one class only (they rank alike): fewer rows, same AUC."""
    n_ties = int(tie.max()) + 1 if tie.size else 0
    has_pos = np.bincount(tie[pos], minlength=n_ties) > 0
    has_neg = np.bincount(tie[~pos], minlength=n_ties) > 0
    kind = has_pos.astype(np.int8) + 2 * has_neg.astype(np.int8)  # 1 pos, 2 neg, 3 both
    start = np.ones(n_ties, dtype=bool)
    start[1:] = (kind[1:] != kind[:-1]) | (kind[1:] == 3)
    return (np.cumsum(start) - 1)[tie]


def _weighted_auc(
    cnt_pos: sparse.csr_matrix, cnt_neg: sparse.csr_matrix, w: np.ndarray
) -> np.ndarray:
    """AUCs (b,) for patient weights w (G, b); counts are (tie groups ascending × patients)."""
    pw = np.asarray(cnt_pos @ w)  # (T, b) weighted positives per tie group
    nw = np.asarray(cnt_neg @ w)
    below = np.cumsum(nw, axis=0) - nw  # negatives with a strictly lower score
    num = (pw * (below + 0.5 * nw)).sum(axis=0)
    den = pw.sum(axis=0) * nw.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_interval(boot: np.ndarray, ci: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of the finite bootstrap values: the m-th smallest and m-th largest,
    m = ceil(B·(1 − ci)/2) (at least 1); (None, None) when there are none.

    With `bootstrap_p_value` this is one rule: the interval excludes 0 exactly when p < 1 − ci.
    """
    boot = np.sort(boot[np.isfinite(boot)])
    if boot.size == 0:
        return None, None
    m = max(1, math.ceil(boot.size * (1.0 - ci) / 2.0 - 1e-9))
    return float(boot[m - 1]), float(boot[boot.size - m])


def check_shapes(y: np.ndarray, *arrays: np.ndarray) -> None:
    """Refuse score arrays whose shape differs from the labels'."""
    for a in arrays:
        if a.shape != y.shape:
            raise ValueError(f"scores shape {a.shape} does not match labels shape {y.shape}")


def _counts(y: np.ndarray, keep: np.ndarray) -> tuple[int, int, str | None]:
    n_pos = int((y[keep] > 0.5).sum())
    n_neg = int(keep.sum()) - n_pos
    if n_pos == 0:
        return n_pos, n_neg, "no positive examples in the test set"
    if n_neg == 0:
        return n_pos, n_neg, "no negative examples in the test set"
    return n_pos, n_neg, None


def _auc_from(bs: PatientBootstrap, y, s, keep, ci: float, codes=None) -> tuple[dict, np.ndarray]:
    n_pos, n_neg, reason = _counts(y, keep)
    out = {"auc": None, "lo": None, "hi": None, "n_pos": n_pos, "n_neg": n_neg, "reason": reason}
    if reason is not None:
        return out, np.full(bs.n_boot, np.nan)
    point, boot = bs.aucs(y, s, keep, codes)
    out["auc"] = float(point)
    out["lo"], out["hi"] = bootstrap_interval(boot, ci)
    return out, boot


def auc(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float | None:
    """Mann-Whitney AUC (ties count one half), NaN labels dropped; None without both classes."""
    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    check_shapes(y, s)
    keep = ~np.isnan(y)
    if _counts(y, keep)[2] is not None:
        return None
    return float(PatientBootstrap(None, len(y), 0).aucs(y, s, keep)[0])


def auc_with_ci(
    y_true: Sequence | np.ndarray,
    scores: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """AUC with a patient-bootstrap percentile CI; NaN labels dropped; None + reason if undefined.

    `groups` are patient ids (None: each image its own patient, i.e. an image-level bootstrap).
    Returns dict(auc, lo, hi, n_pos, n_neg, reason).
    """
    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    check_shapes(y, s)
    bs = PatientBootstrap(groups, len(y), n_boot, seed)
    return _auc_from(bs, y, s, ~np.isnan(y), ci)[0]


def paired_delta(
    y_true: Sequence | np.ndarray,
    scores_a: Sequence | np.ndarray,
    scores_b: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Δ AUC = AUC(b) − AUC(a) on the same images, paired patient-bootstrap CI and p-value.

    p-value (two-sided, percentile bootstrap, the same replicates as the interval):
    p = min(1, 2·min(#{Δ* ≤ 0}, #{Δ* ≥ 0}) / B), so "CI excludes 0" and "p < 0.05" always agree.
    Returns dict(delta, lo, hi, p_value, auc_a, auc_b, n_pos, n_neg, reason).
    """
    y = np.asarray(y_true, dtype=np.float64)
    sa, sb = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    check_shapes(y, sa, sb)
    bs = PatientBootstrap(groups, len(y), n_boot, seed)
    keep = ~np.isnan(y)
    a, boot_a = _auc_from(bs, y, sa, keep, ci)
    b, boot_b = _auc_from(bs, y, sb, keep, ci)
    out = {"delta": None, "lo": None, "hi": None, "p_value": None, "auc_a": a["auc"]}
    out.update(auc_b=b["auc"], n_pos=a["n_pos"], n_neg=a["n_neg"], reason=a["reason"])
    if a["reason"] is not None:
        return out
    delta = b["auc"] - a["auc"]
    boot = boot_b - boot_a
    out["delta"] = float(delta)
    out["lo"], out["hi"] = bootstrap_interval(boot, ci)
    out["p_value"] = bootstrap_p_value(delta, boot)
    return out


def bootstrap_p_value(delta: float, boot: np.ndarray) -> float | None:
    """Two-sided percentile-bootstrap p-value of Δ from the same replicates as its interval:
    p = min(1, 2·min(#{Δ* ≤ 0}, #{Δ* ≥ 0}) / B); None if undefined (`delta` only says whether Δ is
    defined). The percentile interval of `bootstrap_interval` excludes 0 exactly when p < 1 − ci.
    """
    boot = boot[np.isfinite(boot)]
    if not boot.size or not np.isfinite(delta):
        return None
    tail = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    return float(min(1.0, 2.0 * tail / boot.size))


def per_label_report(
    label_names: Sequence[str],
    y: np.ndarray,
    scores: np.ndarray,
    groups: Sequence | np.ndarray | None,
    task: str = "multilabel",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per-label AUC with patient-bootstrap CI, plus `macro` and `micro` rows.

    Multilabel: NaN entries are dropped per label. Single-label tasks (one-hot labels): a row with
    any NaN is dropped whole. Macro = mean over labels with a defined AUC (its CI from the mean per
    resample over those labels); micro = AUC over all kept (image, label) pairs pooled.
    Columns auc, lo, hi, n_pos, n_neg, reason; an undefined AUC is NaN with its reason (never 0.5).
    """
    y, s = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    check_shapes(y, s)
    if y.ndim != 2 or y.shape[1] != len(label_names):
        raise ValueError(f"labels shape {y.shape} does not match {len(label_names)} label names")
    n = len(y)
    keep = ~np.isnan(y)
    if task != "multilabel":
        keep &= keep.all(axis=1, keepdims=True)
    bs = PatientBootstrap(groups, n, n_boot, seed)
    rows, boots = {}, []
    for j, name in enumerate(label_names):
        rows[name], boot = _auc_from(bs, y[:, j], s[:, j], keep[:, j], ci)
        if rows[name]["reason"] is None:
            boots.append(boot)
    macro = {"auc": None, "lo": None, "hi": None, "n_pos": None, "n_neg": None}
    macro["reason"] = None if boots else "no label has both classes in the test set"
    if boots:
        macro["auc"] = float(np.mean([r["auc"] for r in rows.values() if r["auc"] is not None]))
        with warnings.catch_warnings():  # all-NaN resamples: "mean of empty slice"
            warnings.simplefilter("ignore", RuntimeWarning)
            macro["lo"], macro["hi"] = bootstrap_interval(np.nanmean(np.stack(boots), axis=0), ci)
    rows["macro"] = macro
    pairs = np.repeat(bs.codes, y.shape[1])  # (image, label) pairs keep the image's patient
    rows["micro"] = _auc_from(bs, y.ravel(), s.ravel(), keep.ravel(), ci, pairs)[0]
    df = pd.DataFrame.from_dict(rows, orient="index")  # undefined AUCs become NaN (see reason)
    return df.astype({"n_pos": "Int64", "n_neg": "Int64"})


def _kappas(obs: np.ndarray, num_classes: int) -> np.ndarray:
    """Quadratic weighted kappas (b,) of confusion counts (b, K²) (rows true, columns predicted,
    flattened); NaN where undefined (every image of one class, or none)."""
    obs = np.asarray(obs, np.float64).reshape(len(obs), num_classes, num_classes)
    n = np.maximum(obs.sum(axis=(1, 2)), 1.0)
    i, j = np.indices((num_classes, num_classes))
    weights = (i - j) ** 2 / max(num_classes - 1, 1) ** 2
    expected = obs.sum(axis=2)[:, :, None] * obs.sum(axis=1)[:, None, :] / n[:, None, None]
    den = (weights * expected).sum(axis=(1, 2))
    num = (weights * obs).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), np.nan)


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights (i − j)² / (K − 1)²; NaN if it is undefined."""
    obs = confusion_matrix(y_true, y_pred, num_classes).reshape(1, -1)
    return float(_kappas(obs, num_classes)[0])


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): rows true class, columns predicted class."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be equal 1-D shapes")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, -1)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 (0 where undefined, as sklearn's zero_division=0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / (tp + fp))
        recall = np.nan_to_num(tp / (tp + fn))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": tp + fn})


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    ordinal: bool = False,
) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, confusion matrix, label distributions.

    Single-label: y_true / y_pred are class indices (N,); `distribution` puts the true and the
    predicted class frequencies side by side (a model predicting the training prior regardless of
    the image shows a flat row pattern and, for ordinal tasks, a quadratic weighted kappa near 0).
    Multilabel: y_true (N, L) with NaN = unknown and y_pred (N, L) multi-hot; accuracy is over the
    known entries and `confusion` has tp / fp / fn / tn per label.
    """
    names = list(class_names)
    k = len(names)
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred)
    if yt.ndim == 2:
        if yt.shape != yp.shape or yt.shape[1] != k:
            raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} must be (N, {k})")
        known = ~np.isnan(yt)
        t, p = yt > 0.5, yp > 0.5
        tp, fp = (t & p & known).sum(0), (~t & p & known).sum(0)
        fn, tn = (t & ~p & known).sum(0), (~t & ~p & known).sum(0)
        confusion = pd.DataFrame({"tp": tp, "fp": fp, "fn": fn, "tn": tn}, index=names)
        accuracy = float((tp.sum() + tn.sum()) / max(known.sum(), 1))
        distribution = None
    else:
        cm = confusion_matrix(yt.astype(np.int64), yp, k)
        tp = np.diag(cm)
        fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
        confusion = pd.DataFrame(cm, index=names, columns=names)
        confusion.index.name, confusion.columns.name = "true", "predicted"
        accuracy = float(tp.sum() / max(cm.sum(), 1))
        n = max(cm.sum(), 1)
        distribution = pd.DataFrame(
            {
                "true_n": cm.sum(axis=1),
                "pred_n": cm.sum(axis=0),
                "true_frac": cm.sum(axis=1) / n,
                "pred_frac": cm.sum(axis=0) / n,
            },
            index=names,
        )
    per_class = _prf(tp, fp, fn).set_axis(names)
    per_class.loc["macro"] = [
        *per_class[["precision", "recall", "f1"]].mean(),
        per_class.support.sum(),
    ]
    report = {
        "accuracy": accuracy,
        "per_class": per_class,
        "confusion": confusion,
        "distribution": distribution,
    }
    if ordinal:
        if distribution is None:
            raise ValueError("an ordinal report needs class indices (N,), not a label matrix")
        report["qwk"] = quadratic_weighted_kappa(yt.astype(np.int64), yp, k)
    return report

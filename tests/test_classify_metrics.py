"""AUC with patient-bootstrap CIs, paired deltas, reports and kappa against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_cohen_kappa

from classify.metrics import (
    PatientBootstrap,
    auc_with_ci,
    classification_report,
    paired_delta,
    per_label_report,
    quadratic_weighted_kappa,
)


def _mann_whitney(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _patients(n_patients: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sick = rng.random(n_patients) < 0.3
    groups = np.repeat(np.arange(n_patients), per)
    y = np.repeat(sick, per).astype(float)
    s = y + rng.normal(0, 1.2, len(y))
    return y, s, groups


def test_auc_equals_mann_whitney_and_torchmetrics_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.4).astype(float)
    s = np.round(y * 0.4 + rng.random(120), 1)  # many ties
    res = auc_with_ci(y, s, groups=None, n_boot=50)
    assert res["auc"] == pytest.approx(_mann_whitney(y, s), abs=1e-12)
    tm = binary_auroc(torch.tensor(s), torch.tensor(y).long()).item()
    assert res["auc"] == pytest.approx(tm, abs=1e-6)
    assert (res["n_pos"], res["n_neg"]) == (int(y.sum()), int(120 - y.sum()))


def test_ci_contains_estimate_narrows_with_patients_and_is_seeded() -> None:
    small = auc_with_ci(*_patients(40, 2, seed=1), n_boot=400)
    large = auc_with_ci(*_patients(400, 2, seed=1), n_boot=400)
    for r in (small, large):
        assert r["lo"] < r["auc"] < r["hi"]
    assert large["hi"] - large["lo"] < 0.6 * (small["hi"] - small["lo"])
    assert auc_with_ci(*_patients(40, 2, seed=1), n_boot=400) == small


def test_bootstrap_resamples_patients_not_images() -> None:
    y, s, g = _patients(150, 1, seed=2)
    once = auc_with_ci(y, s, g, n_boot=500, seed=0)
    y5, s5, g5 = np.repeat(y, 5), np.repeat(s, 5), np.repeat(g, 5)  # each patient's image x5
    patient = auc_with_ci(y5, s5, g5, n_boot=500, seed=0)
    image = auc_with_ci(y5, s5, None, n_boot=500, seed=0)
    assert patient["auc"] == pytest.approx(once["auc"])
    assert patient["lo"] == pytest.approx(once["lo"]) and patient["hi"] == pytest.approx(once["hi"])
    width = once["hi"] - once["lo"]
    assert image["hi"] - image["lo"] < 0.6 * width  # the image-level CI is falsely narrow


def test_nan_dropped_and_single_class_gives_none_with_reason() -> None:
    y = np.array([1, 0, np.nan, 1, 0, np.nan])
    s = np.array([0.9, 0.1, 0.5, 0.7, 0.8, 0.2])
    g = np.arange(6)
    keep = ~np.isnan(y)
    assert auc_with_ci(y, s, g, n_boot=100) == auc_with_ci(y[keep], s[keep], g[keep], n_boot=100)
    none = auc_with_ci(np.array([0, 0, np.nan]), np.array([0.1, 0.2, 0.3]), None)
    assert none["auc"] is None and none["lo"] is None and "no positive" in none["reason"]
    assert "no negative" in auc_with_ci(np.ones(3), np.arange(3.0), None)["reason"]


def test_paired_delta() -> None:
    y, s, g = _patients(200, 2, seed=3)
    same = paired_delta(y, s, s, g, n_boot=300)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    better = y * 2.0 + np.random.default_rng(4).normal(0, 1.2, len(y))
    res = paired_delta(y, s, better, g, n_boot=300)
    assert res["delta"] == pytest.approx(res["auc_b"] - res["auc_a"])
    assert 0 < res["lo"] < res["delta"] < res["hi"]
    assert res["p_value"] < 0.01
    a = auc_with_ci(y, s, g, n_boot=10)["auc"]
    assert res["auc_a"] == pytest.approx(a)


def test_per_label_report_rows() -> None:
    rng = np.random.default_rng(5)
    n = 300
    y = (rng.random((n, 3)) < [0.3, 0.1, 0.0]).astype(float)
    y[rng.random((n, 3)) < 0.1] = np.nan
    s = np.nan_to_num(y) + rng.normal(0, 1, (n, 3))
    g = np.repeat(np.arange(100), 3)
    df = per_label_report(["a", "b", "c"], y, s, g, task="multilabel", n_boot=200)
    assert list(df.index) == ["a", "b", "c", "macro", "micro"]
    for j, name in enumerate("ab"):
        assert df.loc[name, "auc"] == pytest.approx(auc_with_ci(y[:, j], s[:, j], g)["auc"])
        assert df.loc[name, "lo"] == pytest.approx(auc_with_ci(y[:, j], s[:, j], g, 200)["lo"])
    assert np.isnan(df.loc["c", "auc"]) and "no positive" in df.loc["c", "reason"]
    assert df.loc["c", "n_pos"] == 0 and str(df["n_pos"].dtype) == "Int64"
    assert df.loc["macro", "auc"] == pytest.approx((df.loc["a", "auc"] + df.loc["b", "auc"]) / 2)
    assert df.loc["macro", "lo"] < df.loc["macro", "auc"] < df.loc["macro", "hi"]
    keep = ~np.isnan(y)
    assert df.loc["micro", "auc"] == pytest.approx(_mann_whitney(y[keep], s[keep]))


def test_qwk_hand_example_torchmetrics_and_constant_predictor() -> None:
    t, p = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    assert quadratic_weighted_kappa(t, p, 3) == pytest.approx(7 / 11)  # 1 - 0.5 / 1.375
    rng = np.random.default_rng(6)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    tm = multiclass_cohen_kappa(torch.tensor(p), torch.tensor(t), 5, weights="quadratic")
    assert quadratic_weighted_kappa(t, p, 5) == pytest.approx(tm.item(), abs=1e-6)
    assert quadratic_weighted_kappa(t, t, 5) == pytest.approx(1.0)
    report = classification_report(t, np.full(200, 1), list("01234"), ordinal=True)
    assert report["qwk"] == pytest.approx(0.0, abs=1e-12)
    dist = report["distribution"]
    assert dist.loc["1", "pred_frac"] == 1.0 and dist["true_n"].tolist() == np.bincount(t).tolist()


def test_patient_bootstrap_kappas_equal_kappa_of_each_explicit_resample() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(40), rng.integers(1, 4, 40))  # 1-3 images per patient
    t = rng.integers(0, 5, len(groups))
    p = np.clip(t + rng.integers(-1, 2, len(groups)), 0, 4)  # mostly near the truth
    bs = PatientBootstrap(groups, len(groups), n_boot=60, seed=2)
    point, boot = bs.kappas(t, p, 5)
    assert point == pytest.approx(quadratic_weighted_kappa(t, p, 5))
    weights = np.concatenate(list(bs.multiplicities(7)))  # (60, patients), the same resamples
    assert boot.shape == (60,) and weights.shape == (60, 40)
    for b in (0, 17, 59):  # the resample written out image by image, scored the plain way
        reps = weights[b, bs.codes].astype(int)
        tb, pb = np.repeat(t, reps), np.repeat(p, reps)
        assert boot[b] == pytest.approx(quadratic_weighted_kappa(tb, pb, 5), abs=1e-12)
    assert 0.5 < np.percentile(boot, 2.5) < point < np.percentile(boot, 97.5) < 1.0


def test_classification_report_counts() -> None:
    t = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 2, 2])
    rep = classification_report(t, p, ["x", "y", "z"])
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["confusion"].to_numpy().tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    pc = rep["per_class"]
    assert pc.loc["y", "precision"] == pytest.approx(2 / 3) and pc.loc[
        "y", "recall"
    ] == pytest.approx(2 / 3)
    assert pc.loc["z", "precision"] == pytest.approx(0.5) and pc.loc["z", "f1"] == pytest.approx(
        2 / 3
    )
    assert pc.loc["macro", "recall"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    multi = classification_report(
        np.array([[1, np.nan], [0, 1], [1, 0]]), np.array([[1, 1], [1, 1], [0, 0]]), ["a", "b"]
    )
    assert multi["confusion"].loc["a"].tolist() == [1, 1, 1, 0]
    assert multi["accuracy"] == pytest.approx(3 / 5)


def test_brier_reliability_bins_and_ece_hand_example() -> None:
    from classify.calibration import brier_score, expected_calibration_error, reliability_bins

    y = np.array([0, 0, 1, 1, np.nan])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.5])  # the NaN label's score is dropped
    assert brier_score(y, s) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    bins = reliability_bins(y, s, n_bins=2)
    assert bins["n"].tolist() == [3, 1] and bins["lo"].tolist() == [0.0, 0.5]
    assert bins["mean_score"].tolist() == pytest.approx([0.85 / 3, 0.8])
    assert bins["frac_pos"].tolist() == pytest.approx([1 / 3, 1.0])
    # ECE = 3/4·|1/3 − 0.85/3| + 1/4·|1 − 0.8| = 0.0375 + 0.05
    assert expected_calibration_error(y, s, n_bins=2) == pytest.approx(0.0875)
    edges = reliability_bins([0, 1, 1], [0.0, 0.5, 1.0], n_bins=2)  # 0.5 opens bin 2; 1.0 is in it
    assert edges["n"].tolist() == [1, 2]
    assert np.isnan(reliability_bins([1.0], [0.9], n_bins=4)["mean_score"][0])  # empty bin: NaN
    assert (
        brier_score([np.nan], [0.3]) is None and expected_calibration_error([np.nan], [0.3]) is None
    )


def test_ece_matches_torchmetrics_on_random_scores() -> None:
    from torchmetrics.functional.classification import binary_calibration_error

    from classify.calibration import expected_calibration_error

    rng = np.random.default_rng(3)
    s = rng.random(500)
    y = (rng.random(500) < s**2).astype(float)
    ref = binary_calibration_error(torch.tensor(s), torch.tensor(y).long(), n_bins=15, norm="l1")
    assert expected_calibration_error(y, s, n_bins=15) == pytest.approx(float(ref), abs=1e-6)


def test_youden_threshold_and_metrics_at_a_threshold() -> None:
    from classify.calibration import threshold_metrics, youden_threshold

    y = np.array([0, 0, 1, 1, np.nan])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    # thresholds 0.8: J = 1/2 − 0; 0.4: 1/2 − 1/2; 0.35: 1 − 1/2; 0.1: 1 − 1 → the tie goes to 0.8
    assert youden_threshold(y, s) == {"threshold": 0.8, "j": 0.5, "reason": None}
    at = threshold_metrics(y, s, 0.35)  # scores ≥ 0.35 are positive: 0.35, 0.4, 0.8
    assert (at["tp"], at["fp"], at["fn"], at["tn"]) == (2, 1, 0, 1)
    assert at["sensitivity"] == 1.0 and at["specificity"] == 0.5
    tied = youden_threshold([1, 0, 1], [0.5, 0.5, 0.2])  # 0.5: J = 1/2 − 1; 0.2: J = 1 − 1
    assert tied["threshold"] == 0.2 and tied["j"] == 0.0
    assert youden_threshold([0, 0], [0.2, 0.3]) == {
        "threshold": None,
        "j": None,
        "reason": "no positives",
    }
    assert threshold_metrics([0, 0], [0.2, 0.3], 0.25)["sensitivity"] is None

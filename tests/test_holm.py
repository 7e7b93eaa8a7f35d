"""Significance in the AUC tables: the CI excludes 0 exactly when p < 0.05, Holm's step-down by hand,
a null sweep's false-positive share before and after Holm, and marks and verdicts on Holm's p."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_tables import FRACTIONS, N_BOOT, SEEDS, fake_test_set, row_of, write_cell

from classify.metrics import PatientBootstrap
from pipelines.experiment.stats import auc_table
from pipelines.experiment.verdict import verdict


def test_ci_excludes_zero_exactly_when_p_is_below_five_percent():
    from classify.metrics import bootstrap_interval, bootstrap_p_value

    rng = np.random.default_rng(0)
    for k in range(400):
        n = int(rng.integers(20, 1200))
        boot = rng.normal(rng.normal(0, 0.03), 0.01 + 0.03 * rng.random(), n)
        if k % 7 == 0:
            boot[: n // 3] = 0.0  # ties at zero
        lo, hi = bootstrap_interval(boot)
        p = bootstrap_p_value(float(boot.mean()), boot)
        assert (lo > 0 or hi < 0) == (p < 0.05), (n, lo, hi, p)


def test_holm_step_down_by_hand():
    from pipelines.experiment.stats import holm

    adjusted = holm(np.array([0.01, 0.04, 0.03, np.nan, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, np.nan, 0.02])


def _null_sweep(n_comp: int, training_noise: float, seed: int = 0) -> np.ndarray:
    """p-values of gan − none over comparisons whose arms are identical up to noise (3 seeds)."""
    from pipelines.experiment.stats import paired_delta_row

    rng = np.random.default_rng(seed)
    ps = []
    for c in range(n_comp):
        y = (rng.random(300) < 0.3).astype(float)
        bs = PatientBootstrap(None, len(y), 400, c)
        arms = {}
        for arm in ("none", "gan"):
            arms[arm] = {}
            for s in range(3):  # each seed: a model whose signal strength varies with training
                signal = 1.0 + training_noise * rng.standard_normal()
                scores = signal * y + rng.standard_normal(len(y))
                arms[arm][s] = bs.aucs(y, scores, np.ones(len(y), bool))
        ps.append(paired_delta_row(arms["gan"], arms["none"])["p_value"])
    return np.asarray(ps)


def test_null_sweep_flags_about_five_percent_and_fewer_after_holm():
    from pipelines.experiment.stats import holm

    p = _null_sweep(160, training_noise=0.15)
    raw, adjusted = (p < 0.05).mean(), (holm(p) < 0.05).mean()
    assert raw <= 0.08, raw
    assert adjusted <= raw and adjusted <= 0.02, (raw, adjusted)


def test_marks_and_verdicts_use_holm_adjusted_p_not_the_raw_one(tmp_path):
    """A Δ whose raw p is below 0.05 but whose Holm-adjusted p over the table's family is not gets
    no ✱ and is called within noise; the verdict names the family's size."""
    test = fake_test_set()
    rows = []
    for frac in FRACTIONS:
        for arm in ("none", "standard", "gan"):
            for seed in SEEDS:
                signal = 2.0 if (arm == "gan" and frac == 1) else None
                rows.append(write_cell(tmp_path, test, "Fracture", frac, arm, seed, signal=signal))
    table = auc_table(pd.DataFrame(rows), n_boot=N_BOOT, seed=0)
    gan = row_of(table, "Fracture", 1, "gan")
    assert gan["p_value"] < 0.05 and gan["p_holm"] >= 0.05, (gan["p_value"], gan["p_holm"])
    assert gan["delta_lo"] > 0 and not gan["significant"]
    text = verdict(table, "Fracture")
    raised = text.split(". ")[0]  # the planted 10 % gain passes Holm; 1 % does not
    assert raised.startswith("GAN augmentation (gan − none) raised") and "at 1 %" not in raised
    assert "At 1 % and 50–100 % the difference was within noise" in text
    n = int(np.isfinite(table["p_value"]).sum() + np.isfinite(table["p_value2"]).sum())
    assert f"over the family of all {n} comparisons" in text

"""The seed + patient interval of the AUC table (stats.seed_patient_interval): by hand, its one
rule for CI and p, its bounds, and its coverage of a known Δ against the former percentile bootstrap."""

from __future__ import annotations

import numpy as np
import pytest


def test_interval_widens_to_the_seed_spread_and_is_the_patient_bootstrap_with_one_seed():
    """Seeds disagree strongly, patients agree: the interval covers the seeds, not just patients."""
    from classify.metrics import bootstrap_interval
    from pipelines.experiment.stats import seed_patient_interval

    rng = np.random.default_rng(1)
    points = np.array([0.62, 0.74, 0.88])
    boots = points[:, None] + rng.normal(0, 0.004, (3, 2000))  # tight over patients
    est = seed_patient_interval(points, boots)
    patients_only = np.percentile(boots.mean(axis=0), [2.5, 97.5])
    assert est["lo"] < 0.62 and est["hi"] > 0.88, est  # t with 2 df reaches past the seeds
    assert est["hi"] - est["lo"] > 20 * (patients_only[1] - patients_only[0])
    # by hand: mean ± √((t(0.975, S − 1) · s/√S)² + (z(0.975) · sd of the patient resamples)²)
    from scipy import stats

    a, v = points.var(ddof=1) / 3, boots.mean(axis=0).var(ddof=1)
    half = np.hypot(stats.t.ppf(0.975, 2) * np.sqrt(a), stats.norm.ppf(0.975) * np.sqrt(v))
    assert est["lo"] == pytest.approx(points.mean() - half)
    assert est["hi"] == pytest.approx(points.mean() + half)
    # p: the level whose interval just reaches 0 (here, of a shifted copy)
    shifted = seed_patient_interval(
        points - points.mean() + half / 2, boots - points.mean() + half / 2
    )
    level = seed_patient_interval(
        points - points.mean() + half / 2, boots - points.mean() + half / 2, ci=1 - shifted["p"]
    )
    assert level["lo"] == pytest.approx(0, abs=1e-9)
    one = seed_patient_interval(points[:1], boots[:1])
    assert (one["lo"], one["hi"]) == bootstrap_interval(boots[0])  # the patient bootstrap's


def test_ci_excludes_zero_exactly_when_the_seed_patient_p_is_below_five_percent():
    from pipelines.experiment.stats import seed_patient_interval

    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(2, 7))
        points = rng.normal(rng.normal(0, 0.02), 0.02 * rng.random(), n)
        boots = points[:, None] + rng.normal(0, 0.01 * rng.random(), (1, 400))
        est = seed_patient_interval(points, boots)
        assert (est["lo"] > 0 or est["hi"] < 0) == (est["p"] < 0.05), est


def _former_two_stage(points, boots, rng) -> tuple[float, float]:
    """The interval the table used before (kept here as the yardstick): seeds redrawn with
    replacement, then the patient resample; deviations scaled by √(S/(S−1)); percentile CI."""
    s, b = boots.shape
    drawn = np.take_along_axis(boots.T, rng.integers(0, s, (b, s)), axis=1).mean(axis=1)
    everyone = boots.mean(axis=0)
    return tuple(np.percentile(everyone + np.sqrt(s / (s - 1)) * (drawn - everyone), [2.5, 97.5]))


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("seed_sd, test_sd", [(0.03, 0.005), (0.02, 0.01), (0.005, 0.02)])
def test_seed_patient_intervals_cover_a_known_delta_at_three_and_five_seeds(
    n_seeds, seed_sd, test_sd
):
    """A synthetic sweep with a known Δ: each repetition draws a test set (its sampling error is
    shared by the seeds, and its patient resamples scatter around it) and S training seeds (each
    its own training luck), from training luck dominating to test sampling dominating. The 95 %
    interval must cover Δ in ≥ 93 % of 2,000 repetitions; the former two-stage percentile
    bootstrap over the seeds falls short where training luck dominates."""
    from pipelines.experiment.stats import seed_patient_interval

    rng = np.random.default_rng(n_seeds)
    true, reps, n_boot = 0.03, 2000, 400
    ours = former = 0
    for _ in range(reps):
        test_error = rng.normal(0, test_sd)
        points = true + test_error + rng.normal(0, seed_sd, n_seeds)
        shared = rng.normal(0, test_sd, n_boot)  # the same patient resamples for every seed
        boots = points[:, None] + shared + rng.normal(0, test_sd / 4, (n_seeds, n_boot))
        est = seed_patient_interval(points, boots)
        ours += est["lo"] <= true <= est["hi"]
        lo, hi = _former_two_stage(points, boots, rng)
        former += lo <= true <= hi
    assert 0.93 <= ours / reps <= 0.99, ours / reps  # honest, not needlessly wide
    if seed_sd > test_sd:
        assert former / reps < 0.93, former / reps


def test_an_auc_interval_stays_within_zero_and_one():
    from pipelines.experiment.stats import seed_summary

    rng = np.random.default_rng(4)
    per_seed = {s: (a, a + rng.normal(0, 0.01, 200)) for s, a in enumerate([0.97, 0.999, 0.99])}
    summary = seed_summary(per_seed)
    assert summary["hi"] == 1.0 and 0.9 < summary["lo"] < summary["mean"]

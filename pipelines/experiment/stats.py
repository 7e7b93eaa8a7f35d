"""The experiment's AUC table: per class × fraction × arm, seed means, seed + patient CIs, Holm.

Statistics. All finished cells of a sweep predict the same fixed test images; each seed trains its
own classifier (and, in GAN arms, its own GAN). Each seed's AUC is computed on the test set and on
`n_boot` resamples of the test *patients* (all images of a drawn patient kept;
`classify.metrics.PatientBootstrap`, drawn once and shared by every cell, so arms are paired on
patients). For a class × fraction × arm the AUC is the mean over its finished seeds; its 95 % CI
(`seed_patient_interval`) combines the two sources of error — training randomness, from the spread
of the seeds (Student's t with S − 1 degrees of freedom), and test sampling, from the patient
resamples of the seed mean (normal quantile) — in quadrature, so it stays honest at 3–5 seeds where
a percentile bootstrap over the seeds is too narrow.
Δ(arm − none) pairs the two arms on the seeds both finished and on patients; its CI and two-sided p
are the same construction applied to the per-seed differences, p the smallest 1 − level whose
interval reaches 0, so the CI excludes 0 exactly when p < 0.05. With one seed there is no seed part: the intervals and p are the patient bootstrap's
(percentile; `classify.metrics.bootstrap_interval` / `bootstrap_p_value`) and cover test sampling
only. `p_holm` is Holm's (1979) step-down adjustment over every Δ of the sweep; the primary
comparison is gan − none per class and fraction.

The predictions are read and checked by `predictions.py`; the table is rendered (Markdown, CSV,
verdicts) by `tables.py`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from classify.metrics import PatientBootstrap, bootstrap_interval, bootstrap_p_value
from pipelines.classifier.arms import ARMS
from pipelines.errors import RareganError
from pipelines.experiment.paper import paper_auc
from pipelines.experiment.predictions import KEY, collect


def _ci(boot: np.ndarray) -> tuple[float, float]:
    """95 % percentile interval, NaN where undefined (the table's convention)."""
    lo, hi = bootstrap_interval(boot)
    return (np.nan, np.nan) if lo is None else (lo, hi)


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def _half_width(alpha: float, df: int, seed_var: float, patient_var: float) -> float:
    """Half-width of the 1 − alpha interval: each part expanded by its own coverage factor
    (Student's t with `df` for the seed part, normal for the patient part), in quadrature."""
    from scipy import stats

    t = stats.t.ppf(1 - alpha / 2, df) if seed_var > 0 else 0.0
    return float(
        np.hypot(t * np.sqrt(seed_var), stats.norm.ppf(1 - alpha / 2) * np.sqrt(patient_var))
    )


def seed_patient_interval(points, boots, ci: float = 0.95, bounds=(-np.inf, np.inf)) -> dict:
    """Mean over S seeds of a statistic, its CI and two-sided p (against 0), from the seeds' point
    values `points` (S,) and their values on the same B patient resamples `boots` (S, B).

    The error of the seed mean has two independent parts: training randomness, estimated from the
    spread of the seeds' points (variance s²/S with S − 1 degrees of freedom), and test sampling,
    the variance of the seed mean over the patient resamples. Each part is expanded by its own
    coverage factor — Student's t with S − 1 degrees of freedom for the seed part, the normal
    quantile for the patient part (estimated from B ≥ hundreds of resamples) — and the two are
    combined in quadrature (root-sum-square of expanded uncertainties; JCGM 100:2008, the GUM,
    annex G, gives Welch–Satterthwaite instead, which undercovers at 3 seeds: 0.91 where 0.95 is
    asked, while this rule stays at 0.95–0.98 from 3 seeds on; tests/test_intervals.py simulates it
    against the former percentile bootstrap over the seeds). p is the smallest 1 − level whose
    interval reaches 0, so the CI excludes 0 exactly when p < 1 − ci. With one seed there is no
    seed part: the patient bootstrap's percentile interval and p. The interval is clipped to the
    statistic's `bounds` (an AUC's [0, 1]), which leaves p unchanged."""
    from scipy.optimize import brentq

    points = np.asarray(points, dtype=np.float64)
    mean = float(points.mean()) if points.size else np.nan
    out = {"mean": mean, "lo": np.nan, "hi": np.nan, "p": np.nan}
    if points.size == 0:
        return out
    pooled = np.asarray(boots, dtype=np.float64).reshape(len(points), -1).mean(axis=0)
    if points.size == 1:
        lo, hi = _ci(pooled)
        return out | {"lo": lo, "hi": hi, "p": _nan(bootstrap_p_value(mean, pooled))}
    df = points.size - 1
    seed_var = float(points.var(ddof=1)) / points.size
    patient_var = float(pooled.var(ddof=1)) if pooled.size > 1 else 0.0
    if not seed_var + patient_var > 0:
        return out | {"lo": mean, "hi": mean, "p": 1.0 if mean == 0 else 0.0}
    half = _half_width(1 - ci, df, seed_var, patient_var)
    reach = lambda alpha: _half_width(alpha, df, seed_var, patient_var) - abs(mean)  # noqa: E731
    if mean == 0:
        p = 1.0
    elif reach(1e-300) < 0:
        p = 0.0
    else:
        p = float(brentq(reach, 1e-300, 1.0, xtol=1e-12))
    lo, hi = np.clip([mean - half, mean + half], *bounds)
    return out | {"lo": float(lo), "hi": float(hi), "p": p}


def _arm_row(group: pd.DataFrame, y, coll: dict, bs) -> tuple[dict, dict]:
    """Mean AUC over finished seeds, its CI (seed + patient), seed spread and failed/pending counts of one
    arm; and each finished seed's (point AUC, patient-bootstrap AUCs)."""
    status = group["status"]
    failed = group[status == "failed"]
    errors = [f"seed {s}: {e}" for s, e in zip(failed["seed"], failed["error"], strict=True)]
    row = {"n_failed": len(failed), "n_pending": int((status == "pending").sum())}
    row["errors"] = "; ".join(errors)
    done = group[status == "done"].sort_values("seed")
    per_seed = {}
    if y is not None:
        keep = ~np.isnan(y)
        row["n_pos"] = n_pos = int((y[keep] > 0.5).sum())
        row["n_neg"] = int(keep.sum()) - n_pos
        keys = done[KEY].itertuples(index=False, name=None) if n_pos and row["n_neg"] else []
        for key in keys:
            per_seed[key[3]] = bs.aucs(y, coll["scores"][key], keep)
    summary = seed_summary(per_seed)
    row.update(auc=summary["mean"], lo=summary["lo"], hi=summary["hi"])
    row.update(seed_std=summary["seed_std"], n_seeds=summary["n_seeds"])
    row["seed_aucs"] = summary["per_seed"]
    return row, per_seed


def seed_summary(per_seed: dict, bounds=(0.0, 1.0)) -> dict:
    """Mean over finished seeds of a statistic ({seed: (point, patient-bootstrap values)}), its
    95 % CI (`seed_patient_interval`, within the statistic's `bounds`), seed spread and count, and
    the per-seed values as text."""
    points = np.asarray([point for point, _ in per_seed.values()])
    est = seed_patient_interval(points, [b for _, b in per_seed.values()], bounds=bounds)
    return {
        "mean": est["mean"],
        "lo": est["lo"],
        "hi": est["hi"],
        "seed_std": float(points.std(ddof=1)) if points.size > 1 else np.nan,
        "n_seeds": int(len(per_seed)),
        "per_seed": " ".join(f"{s}:{a:.4f}" for s, (a, _) in per_seed.items()),
    }


def paired_delta_row(arm: dict, none: dict) -> dict:
    """Δ(arm − none) on the seeds both finished: mean paired difference, its 95 % CI and p
    (`seed_patient_interval` of the per-seed differences, on the same patient resamples)."""
    common = sorted(set(arm) & set(none))
    out = {"delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "p_value": np.nan}
    if not common:
        return out
    points = [arm[s][0] - none[s][0] for s in common]
    est = seed_patient_interval(points, [arm[s][1] - none[s][1] for s in common])
    out.update(delta=est["mean"], delta_lo=est["lo"], delta_hi=est["hi"], p_value=est["p"])
    out["n_paired_seeds"] = len(common)
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def _note(cls: str, row: dict) -> str:
    notes = [f"{row[k]} seed(s) {k[2:]}" for k in ("n_failed", "n_pending") if row[k]]
    for side in ("positive", "negative"):
        if row.get(f"n_{side[:3]}") == 0:
            notes.insert(0, f"no {side} {cls} images in the test set: AUC undefined")
    return "; ".join(notes)


def _collected(cells: pd.DataFrame | dict) -> dict:
    """The sweep's predictions: read now from a cell table, or as already collected."""
    return cells if isinstance(cells, dict) else collect(cells)


# arm → its second reference
SECONDARY = {"gan": "gan_nofilter", "gan_standard": "standard", "diffusion_standard": "standard"}
SECONDARY["gan_pretrain"] = "gan"  # pretraining on synthetic images vs mixing them in
SECONDARY["gan_ratio"] = "gan"  # the ratio chosen on validation vs the fixed compare.synth_ratio
SECOND_COLUMNS = {"delta": "delta2", "delta_lo": "delta2_lo", "delta_hi": "delta2_hi"} | {
    "p_value": "p_value2",
    "p_holm": "p_holm2",
}


def auc_table(
    cells: pd.DataFrame | dict, n_boot: int = 1000, seed: int = 0, paper: bool = True
) -> pd.DataFrame:
    """One row per class × fraction × arm: seed-mean AUC with its CI, seed spread, Δ vs none
    (and vs SECONDARY[arm]: gan − gan_nofilter, gan_standard − standard), Holm-adjusted p over
    every Δ, and the paper's AUC when `paper` (CheXpert sources only). `cells`: the cell table, or
    what `predictions.collect` made of it (read once for several tables)."""
    coll = _collected(cells)
    cells = coll["cells"]
    bs = PatientBootstrap(coll["patient"], len(coll["patient"]), n_boot, seed)
    rows = []
    for (cls, frac), group in cells.groupby(["class", "fraction"], sort=True):
        y = coll["labels"].get(cls)
        seeds_of = {}
        for arm in [a for a in ARMS if a in set(group["arm"])]:
            sub = group[group["arm"] == arm]
            row, seeds_of[arm] = _arm_row(sub, y, coll, bs)
            row.update({"class": cls, "fraction": frac, "arm": arm})
            row["note"] = _note(cls, row)
            row.update({"delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "p_value": np.nan})
            if arm != "none" and "none" in seeds_of:
                row.update(paired_delta_row(seeds_of[arm], seeds_of["none"]))
            ref = SECONDARY.get(arm)
            row["ref2"] = ref if ref in seeds_of else ""
            if row["ref2"]:
                second = paired_delta_row(seeds_of[arm], seeds_of[ref])
                row.update({SECOND_COLUMNS[k]: v for k, v in second.items() if k in SECOND_COLUMNS})
            value = paper_auc(cls, frac, arm) if paper else None
            row["paper_auc"] = np.nan if value is None else value
            rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("delta2", "delta2_lo", "delta2_hi", "p_value2"):
        if col not in table:
            table[col] = np.nan
    both = np.concatenate([table["p_value"].to_numpy(float), table["p_value2"].to_numpy(float)])
    adjusted = holm(both) if len(table) else both
    table["p_holm"], table["p_holm2"] = adjusted[: len(table)], adjusted[len(table) :]
    # significant: Holm-adjusted p < ALPHA over the whole family (every Δ of the table, both
    # references), never the raw p alone
    table["significant"] = holm_significant(table["p_holm"])
    table["significant2"] = holm_significant(table["p_holm2"])
    columns = [
        *["class", "fraction", "arm", "auc", "lo", "hi", "seed_std", "n_seeds", "n_failed"],
        *["n_pending", "n_pos", "n_neg", "delta", "delta_lo", "delta_hi", "p_value", "p_holm"],
        *["ref2", "delta2", "delta2_lo", "delta2_hi", "p_value2", "p_holm2"],
        *["significant", "significant2", "paper_auc", "note", "errors", "seed_aucs"],
    ]
    return table.reindex(columns=columns)


ALPHA = 0.05


def holm_significant(p_holm: pd.Series) -> pd.Series:
    """True where a Holm-adjusted p is below ALPHA (False where there is none)."""
    p = pd.to_numeric(p_holm, errors="coerce")
    return (p < ALPHA).fillna(False).astype(bool)


def family_size(table: pd.DataFrame) -> int:
    """The number of comparisons in Holm's family: every Δ of the table with a p, both references."""
    return int(np.isfinite(table["p_value"].astype(float)).sum()) + int(
        np.isfinite(table.get("p_value2", pd.Series(dtype=float)).astype(float)).sum()
    )


def qwk_table(cells: pd.DataFrame | dict, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Ordinal tasks (e.g. KL grades): one row per fraction × arm with the seed-mean quadratic
    weighted kappa of the predicted grade (highest-scoring class) against the true grade, its
    CI, and Δ vs none (paired on seeds and patients, CI, p), by the same rule as the
    AUC table. A classifier scores every class, so a (fraction, arm, seed) counts once however many
    classes the sweep studies. `p_holm` adjusts the kappa Δs among themselves: a secondary endpoint,
    not in the AUC table's family. `cells` as for `auc_table`."""
    columns = ["fraction", "arm", "qwk", "lo", "hi", "seed_std", "n_seeds"]
    columns += ["delta", "delta_lo", "delta_hi", "p_value", "p_holm", "significant", "seed_qwks"]
    coll = _collected(cells)
    names = list(coll["labels"])
    if not coll["predicted"]:  # no finished cell yet
        return pd.DataFrame(columns=columns)
    y = np.stack([coll["labels"][n] for n in names], axis=1)
    if np.isnan(y).any() or (y.sum(axis=1) != 1).any():
        raise RareganError(
            "a kappa table needs a single-label task: every test image with exactly one grade"
        )
    grade = y.argmax(axis=1)
    bs = PatientBootstrap(coll["patient"], len(coll["patient"]), n_boot, seed)
    per: dict[tuple[float, str], dict] = {}
    for (_, frac, arm, s), pred in sorted(coll["predicted"].items(), key=lambda kv: kv[0][1:]):
        if s not in per.setdefault((frac, arm), {}):
            per[frac, arm][s] = bs.kappas(grade, pred, len(names))
    rows = []
    for frac in sorted({f for f, _ in per}):
        for arm in [a for a in ARMS if (frac, a) in per]:
            summary = seed_summary(per[frac, arm], bounds=(-1.0, 1.0))
            row = {"fraction": frac, "arm": arm, "qwk": summary["mean"], "lo": summary["lo"]}
            row.update(hi=summary["hi"], seed_std=summary["seed_std"])
            row.update(n_seeds=summary["n_seeds"], seed_qwks=summary["per_seed"])
            none = per.get((frac, "none"))
            if arm != "none" and none:
                row.update(paired_delta_row(per[frac, arm], none))
            rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table["significant"] = holm_significant(table["p_holm"])
    return table

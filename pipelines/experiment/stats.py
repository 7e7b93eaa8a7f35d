"""The experiment's AUC table: per class × fraction × arm, seed means, two-stage bootstrap CIs, Holm.

Statistics. All finished cells of a sweep predict the same fixed test images; each seed trains its
own classifier (and, in GAN arms, its own GAN). Intervals come from a two-stage (hierarchical)
bootstrap (Davison & Hinkley 1997, Bootstrap Methods and their Application, §3.8): each of the
`n_boot` replicates first draws the seeds with replacement, then uses one resample of the test
*patients* (all images of a drawn patient kept; `classify.metrics.PatientBootstrap`, drawn once and
shared by every cell, so arms are paired on patients); the replicate is the mean over the drawn seeds
of their AUCs on that patient resample, its deviation from the all-seed mean scaled by √(S/(S−1))
for few seeds. For a class × fraction × arm the AUC is the mean over its
finished seeds and its 95 % CI the percentile interval of the replicates, so it covers training
randomness (seeds) and test sampling (patients). Δ(arm − none) pairs the two arms on the seeds both
finished (the same seed draws for both) and on patients; its 95 % CI and two-sided p come from the
same replicates by one rule (`classify.metrics.bootstrap_interval` / `bootstrap_p_value`): the CI
excludes 0 exactly when p < 0.05. With one seed the first stage is empty and the intervals cover test
sampling only. `p_holm` is Holm's (1979) step-down adjustment over every Δ of the sweep; the primary
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


def seed_draws(n_seeds: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """The first bootstrap stage: (n_boot, n_seeds) seed indices drawn with replacement."""
    return np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(n_boot, n_seeds))


def two_stage(boots: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Replicate b = mean over the seeds drawn for b of their value on patient resample b.

    `boots` (S, B): per seed, the statistic on each patient resample; `draws` (B, S) from
    `seed_draws`. The first stage's deviations from the all-seed mean are scaled by √(S/(S−1)),
    the usual correction for resampling few clusters (Davison & Hinkley 1997, §3.8), so the seed
    stage's variance of a mean is not shrunk by (S−1)/S.
    """
    boots = np.asarray(boots, dtype=np.float64)
    drawn = np.take_along_axis(boots.T, draws, axis=1).mean(axis=1)
    n_seeds = boots.shape[0]
    if n_seeds < 2:
        return drawn
    everyone = boots.mean(axis=0)
    return everyone + np.sqrt(n_seeds / (n_seeds - 1)) * (drawn - everyone)


def _arm_row(group: pd.DataFrame, y, coll: dict, bs, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Mean AUC over finished seeds, its two-stage CI, seed spread and failed/pending counts of one
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
    summary = seed_summary(per_seed, n_boot, seed)
    row.update(auc=summary["mean"], lo=summary["lo"], hi=summary["hi"])
    row.update(seed_std=summary["seed_std"], n_seeds=summary["n_seeds"])
    row["seed_aucs"] = summary["per_seed"]
    return row, per_seed


def seed_summary(per_seed: dict, n_boot: int, seed: int) -> dict:
    """Mean over finished seeds of a statistic ({seed: (point, patient-bootstrap values)}), its
    two-stage 95 % CI, seed spread and count, and the per-seed values as text."""
    points = np.asarray([point for point, _ in per_seed.values()])
    boot = (
        two_stage([b for _, b in per_seed.values()], seed_draws(len(per_seed), n_boot, seed))
        if per_seed
        else np.full(n_boot, np.nan)
    )
    lo, hi = _ci(boot)
    return {
        "mean": float(points.mean()) if points.size else np.nan,
        "lo": lo,
        "hi": hi,
        "seed_std": float(points.std(ddof=1)) if points.size > 1 else np.nan,
        "n_seeds": int(len(per_seed)),
        "per_seed": " ".join(f"{s}:{a:.4f}" for s, (a, _) in per_seed.items()),
    }


def paired_delta_row(arm: dict, none: dict, n_boot: int, seed: int) -> dict:
    """Δ(arm − none) on the seeds both finished: mean paired difference, two-stage CI and p."""
    common = sorted(set(arm) & set(none))
    out = {"delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "p_value": np.nan}
    if not common:
        return out
    diffs = np.asarray([arm[s][1] - none[s][1] for s in common])
    boot = two_stage(diffs, seed_draws(len(common), n_boot, seed))
    delta = float(np.mean([arm[s][0] - none[s][0] for s in common]))
    lo, hi = _ci(boot)
    out.update(delta=delta, delta_lo=lo, delta_hi=hi, p_value=_nan(bootstrap_p_value(delta, boot)))
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


SECONDARY = {"gan": "gan_nofilter", "gan_standard": "standard"}  # arm → its second reference
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
            row, seeds_of[arm] = _arm_row(sub, y, coll, bs, n_boot, seed)
            row.update({"class": cls, "fraction": frac, "arm": arm})
            row["note"] = _note(cls, row)
            row.update({"delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "p_value": np.nan})
            if arm != "none" and "none" in seeds_of:
                row.update(paired_delta_row(seeds_of[arm], seeds_of["none"], n_boot, seed))
            ref = SECONDARY.get(arm)
            row["ref2"] = ref if ref in seeds_of else ""
            if row["ref2"]:
                second = paired_delta_row(seeds_of[arm], seeds_of[ref], n_boot, seed)
                row.update({SECOND_COLUMNS[k]: v for k, v in second.items() if k in SECOND_COLUMNS})
            row["significant"] = bool(row["delta_lo"] > 0 or row["delta_hi"] < 0)
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
    columns = [
        *["class", "fraction", "arm", "auc", "lo", "hi", "seed_std", "n_seeds", "n_failed"],
        *["n_pending", "n_pos", "n_neg", "delta", "delta_lo", "delta_hi", "p_value", "p_holm"],
        *["ref2", "delta2", "delta2_lo", "delta2_hi", "p_value2", "p_holm2"],
        *["significant", "paper_auc", "note", "errors", "seed_aucs"],
    ]
    return table.reindex(columns=columns)


def qwk_table(cells: pd.DataFrame | dict, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Ordinal tasks (e.g. KL grades): one row per fraction × arm with the seed-mean quadratic
    weighted kappa of the predicted grade (highest-scoring class) against the true grade, its
    two-stage CI, and Δ vs none (paired on seeds and patients, CI, p), by the same bootstrap as the
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
            summary = seed_summary(per[frac, arm], n_boot, seed)
            row = {"fraction": frac, "arm": arm, "qwk": summary["mean"], "lo": summary["lo"]}
            row.update(hi=summary["hi"], seed_std=summary["seed_std"])
            row.update(n_seeds=summary["n_seeds"], seed_qwks=summary["per_seed"])
            none = per.get((frac, "none"))
            if arm != "none" and none:
                row.update(paired_delta_row(per[frac, arm], none, n_boot, seed))
            rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table["significant"] = (table["delta_lo"] > 0) | (table["delta_hi"] < 0)
    return table

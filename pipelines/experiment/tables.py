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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from classify.metrics import PatientBootstrap, bootstrap_interval, bootstrap_p_value
from pipelines.classifier.arms import ARMS
from pipelines.errors import RareganError
from pipelines.experiment.paper import paper_auc
from pipelines.runs import atomic_write_text, ensure_writable, is_done

CELL_COLUMNS = ("class", "fraction", "arm", "seed", "status", "run", "error", "predictions")
STATUSES = ("done", "failed", "pending")
KEY = ["class", "fraction", "arm", "seed"]


def label_names(frame: pd.DataFrame) -> list[str]:
    """Labels L of a predictions frame: those with both an `L` and a `score:L` column."""
    return [c for c in frame.columns if not c.startswith("score:") and f"score:{c}" in frame]


def predictions_file(source: Path | str) -> Path:
    """A cell's predictions: `source` itself when it names a CSV file (a cell record's
    `.csv.gz`), else the `predictions.csv` of the run folder `source`."""
    source = Path(source)
    return source if source.name.endswith((".csv", ".csv.gz")) else source / "predictions.csv"


def load_predictions(source: Path | str) -> pd.DataFrame:
    """A finished cell's predictions (`predictions_file`), checked: ids unique, labels 1/0/NaN,
    scores finite."""
    path = predictions_file(source)
    if not path.is_file():
        raise RareganError(f"{path}: predictions file missing; re-run that cell or mark it failed")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "patient": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RareganError(f"{path}: not a readable CSV ({err}); re-run that cell") from None
    labels = label_names(frame)
    missing = [c for c in ("image_id", "patient") if c not in frame]
    if missing or not labels:
        what = f"columns {missing}" if missing else "any pair of columns `L` and `score:L`"
        raise RareganError(f"{path}: lacks {what}; re-run that cell with the current raregan")
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.argmax(dup.to_numpy())) + 2
        raise RareganError(f"{path} row {row}: image_id {frame['image_id'][dup].iloc[0]!r} repeats")
    scores = [f"score:{n}" for n in labels]
    num = frame[labels + scores].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = (num.isna() & frame[num.columns].notna()) | ~np.isfinite(num.fillna(0))
    bad[labels] |= num[labels].notna() & ~num[labels].isin([0, 1])
    bad[scores] |= num[scores].isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise RareganError(
            f"{path} row {row + 2}: column {num.columns[col]!r} has "
            f"{frame[num.columns[col]].iloc[row]}; labels must be 1, 0 or empty and scores "
            "finite numbers; re-run that cell"
        )
    frame[num.columns] = num
    return frame


def _source(cell: Mapping) -> str | None:
    """Where a done cell's predictions are: its record's file, else its run folder."""
    for key in ("predictions", "run"):
        if isinstance(cell.get(key), str | Path) and str(cell[key]):
            return str(cell[key])
    return None


def check_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """A validated copy; a `done` cell whose record file is gone, or (without a record) whose run
    folder lacks DONE, counts as failed, with that error."""
    missing = [c for c in CELL_COLUMNS[:5] if c not in cells]
    if missing:
        raise RareganError(f"cells table lacks columns {missing}; it needs {list(CELL_COLUMNS)}")
    cells = cells.reset_index(drop=True).copy()
    cells = cells.reindex(columns=[*cells, *[c for c in CELL_COLUMNS[5:] if c not in cells]])
    cells["error"] = cells["error"].astype(object).fillna("").astype(str)
    checks = (
        (~cells["arm"].isin(ARMS), lambda r: f"arm {r['arm']!r} is not one of {', '.join(ARMS)}"),
        (
            ~cells["status"].isin(STATUSES),
            lambda r: f"status {r['status']!r} is not one of " + ", ".join(STATUSES),
        ),
        (cells.duplicated(KEY), lambda r: f"cell {tuple(r[KEY])} is listed twice"),
    )
    for bad, why in checks:
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise RareganError(f"cells table row {i}: {why(cells.loc[i])}")
    for i in cells.index[cells["status"] == "done"]:
        source = _source(cells.loc[i])
        record = source is not None and predictions_file(source) == Path(source)
        if record and not Path(source).is_file():
            cells.loc[i, ["status", "error"]] = ["failed", f"cell record file {source} is missing"]
        elif not record and (source is None or not is_done(Path(source))):
            why = f"run folder {source} has no DONE marker (the run did not finish)"
            cells.loc[i, ["status", "error"]] = ["failed", why]
    return cells


def collect(cells: pd.DataFrame) -> dict:
    """Finished cells' predictions aligned on image_id (sorted).

    Returns dict(image_id, patient: arrays (N,); labels: {label: y (N,) with NaN}; scores:
    {(class, fraction, arm, seed): score of that cell's class (N,)}; cells: the checked table).
    """
    cells = check_cells(cells)
    out = {"image_id": np.empty(0, str), "patient": np.empty(0, str), "labels": {}, "scores": {}}
    ref, ref_path = None, None
    for row in cells[cells["status"] == "done"].to_dict("records"):
        path, cls = predictions_file(_source(row)), row["class"]
        frame = load_predictions(path)
        if f"score:{cls}" not in frame or cls not in frame:
            raise RareganError(
                f"{path}: no columns {cls!r} and 'score:{cls}' for the cell's class; it has "
                f"{label_names(frame)}; check the class names of the sweep"
            )
        frame = frame.set_index("image_id")
        if ref is None:
            frame = ref = frame.sort_index()
            ref_path = path
            out["image_id"] = ref.index.to_numpy(str)
            out["patient"] = ref["patient"].to_numpy(str)
            out["labels"] = {n: ref[n].to_numpy(np.float64) for n in label_names(ref.reset_index())}
        else:
            odd = frame.index.symmetric_difference(ref.index)
            frame = frame.reindex(ref.index)
            cols = ["patient", *[n for n in out["labels"] if n in frame]]
            differ = ~((ref[cols] == frame[cols]) | (ref[cols].isna() & frame[cols].isna()))
            if len(odd) or differ.to_numpy().any():
                what = (
                    f"image_id {odd[0]!r} is in only one of them"
                    if len(odd)
                    else (
                        f"column {differ.any().idxmax()!r} of image_id "
                        f"{differ.any(axis=1).idxmax()!r} differs"
                    )
                )
                raise RareganError(
                    f"{path} vs {ref_path}: {what}; all cells of a sweep must share one test split"
                )
        out["scores"][tuple(row[k] for k in KEY)] = frame[f"score:{cls}"].to_numpy(np.float64)
    out["cells"] = cells
    return out


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
    aucs = np.asarray([point for point, _ in per_seed.values()])
    row["auc"] = float(aucs.mean()) if aucs.size else np.nan
    boot = (
        two_stage([b for _, b in per_seed.values()], seed_draws(len(per_seed), n_boot, seed))
        if per_seed
        else np.full(n_boot, np.nan)
    )
    row["lo"], row["hi"] = _ci(boot)
    row["seed_std"] = float(aucs.std(ddof=1)) if aucs.size > 1 else np.nan
    row["n_seeds"] = int(len(per_seed))
    row["seed_aucs"] = " ".join(f"{s}:{a:.4f}" for s, (a, _) in per_seed.items())
    return row, per_seed


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


SECONDARY = {"gan": "gan_nofilter", "gan_standard": "standard"}  # arm → its second reference
SECOND_COLUMNS = {"delta": "delta2", "delta_lo": "delta2_lo", "delta_hi": "delta2_hi"} | {
    "p_value": "p_value2",
    "p_holm": "p_holm2",
}


def auc_table(
    cells: pd.DataFrame, n_boot: int = 1000, seed: int = 0, paper: bool = True
) -> pd.DataFrame:
    """One row per class × fraction × arm: seed-mean AUC with its CI, seed spread, Δ vs none
    (and vs SECONDARY[arm]: gan − gan_nofilter, gan_standard − standard), Holm-adjusted p over
    every Δ, and the paper's AUC when `paper` (CheXpert sources only)."""
    coll = collect(cells)
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


def fmt_fraction(frac: float) -> str:
    """10 → '10 %', 2.5 → '2.5 %'."""
    return f"{float(frac):g} %"


def fmt_p(p: float) -> str:
    """'p = 0.032', 'p < 0.001' or 'p n/a'."""
    return "p n/a" if not np.isfinite(p) else "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_auc(row: pd.Series) -> str:
    """'0.812 [0.790, 0.830]' with failed/pending seeds flagged; 'n/a' when undefined."""
    text = f"{row['auc']:.3f}" if np.isfinite(row["auc"]) else "n/a"
    text += f" [{row['lo']:.3f}, {row['hi']:.3f}]" if np.isfinite(row["lo"]) else ""
    text += f" ⚠ {row['n_failed']} failed" if row["n_failed"] else ""
    return text + (f" · {row['n_pending']} pending" if row["n_pending"] else "")


def fmt_delta(row: pd.Series | None) -> str:
    """'**+0.031 [+0.012, +0.050] p = 0.002 ✱**' (bold + ✱ when the CI excludes 0)."""
    if row is None or not np.isfinite(row["delta"]):
        return "—"
    text = f"{row['delta']:+.3f}"
    if np.isfinite(row["delta_lo"]):
        text += f" [{row['delta_lo']:+.3f}, {row['delta_hi']:+.3f}] {fmt_p(row['p_value'])}"
        holm_p = row.get("p_holm", np.nan)
        text += f", Holm {fmt_p(holm_p)[2:]}" if np.isfinite(holm_p) else ""
    return f"**{text} ✱**" if row["significant"] else text


def _second(row: pd.Series) -> pd.Series:
    """The arm's second comparison (vs SECONDARY[arm]) in fmt_delta's shape."""
    out = pd.Series({k: row[col] for k, col in SECOND_COLUMNS.items()})
    out["significant"] = bool(out["delta_lo"] > 0 or out["delta_hi"] < 0)
    return out


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """The readable view: one row per class × fraction, arms side by side, Δs, the paper's AUCs."""
    present = [a for a in ARMS if a in set(table["arm"])]
    out = []
    for (cls, frac), group in table.groupby(["class", "fraction"], sort=True):
        arm = {r["arm"]: r for _, r in group.iterrows()}
        row = {"class": cls, "fraction": fmt_fraction(frac)}
        row.update({a: fmt_auc(arm[a]) if a in arm else "—" for a in present})
        for a in present[1:] if present[:1] == ["none"] else present:
            row[f"Δ {a} − none"] = fmt_delta(arm.get(a))
        for a, ref in SECONDARY.items():
            if a in present and ref in present:
                row[f"Δ {a} − {ref}"] = (
                    fmt_delta(_second(arm[a])) if a in arm and arm[a]["ref2"] else "—"
                )
        row["classifier seeds (" + ", ".join(present) + ")"] = "/".join(
            str(arm[a]["n_seeds"]) if a in arm else "–" for a in present
        )
        paper = {a: arm[a]["paper_auc"] if a in arm else np.nan for a in present}
        if any(np.isfinite(v) for v in paper.values()):
            row.update(
                {f"paper {a}": f"{v:.3f}" if np.isfinite(v) else "—" for a, v in paper.items()}
            )
        out.append(row)
    return pd.DataFrame(out)


def md_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of a frame's values as text."""

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


LEGEND = (
    "AUC = mean over finished classifier seeds [95 % CI, two-stage bootstrap: seeds, then test "
    "patients]. Δ = arm − none, paired on seeds and patients, with its 95 % CI and two-sided p from the "
    "same bootstrap replicates (the CI excludes 0 exactly when p < 0.05), and Holm's adjusted p over "
    "every Δ of the sweep. Primary comparison: gan − none per class and fraction. **bold ✱** = CI "
    "excludes 0 (unadjusted). ⚠ = failed seeds (the mean rests on fewer seeds). Paper = Sundaram & "
    "Hulkund 2021, one seed."
)


def write_tables(table: pd.DataFrame, out_dir: Path | str) -> dict[str, Path]:
    """Write `auc_table.csv` (every column) and `auc_table.md` (the readable view, notes)."""
    out = ensure_writable(Path(out_dir))
    paths = {"csv": out / "auc_table.csv", "md": out / "auc_table.md"}
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    notes = [
        f"- {r['class']}, {fmt_fraction(r['fraction'])}, {r['arm']}: {r['note']}"
        + (f" ({r['errors']})" if r["errors"] else "")
        for _, r in table[table["note"].fillna("") != ""].iterrows()
    ]
    lines = ["# AUC per class, fraction and arm", "", LEGEND, "", md_table(wide(table))]
    lines += ["## Notes", "", *notes] if notes else []
    atomic_write_text(paths["md"], "\n".join(lines).rstrip() + "\n")
    return paths


def _spans(fracs: list, order: list) -> str:
    """Fractions as text, runs of neighbours in `order` joined: '1 %, 25–100 %'."""
    idx = sorted(order.index(f) for f in fracs)
    groups, start = [], 0
    for k in range(1, len(idx) + 1):
        if k == len(idx) or idx[k] != idx[k - 1] + 1:
            a, b = order[idx[start]], order[idx[k - 1]]
            groups.append(fmt_fraction(a) if a == b else f"{float(a):g}–{fmt_fraction(b)}")
            start = k
    return groups[0] if len(groups) == 1 else ", ".join(groups[:-1]) + " and " + groups[-1]


def _effect(rows: pd.DataFrame) -> str:
    return " and ".join(
        f"by {abs(r['delta']):.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}] at "
        f"{fmt_fraction(r['fraction'])} ({fmt_p(r['p_value'])})"
        for _, r in rows.iterrows()
    )


def _arm_sentences(rows: pd.DataFrame, cls: str, name: str, order: list) -> list[str]:
    """What one arm did against none, fraction by fraction."""
    known = rows[np.isfinite(rows["delta"])]
    flat, out = known[~known["significant"]], []
    for sign, verb in ((1, "raised"), (-1, "lowered")):
        hit = known[known["significant"] & (np.sign(known["delta"]) == sign)]
        if len(hit):
            out.append(f"{name} {verb} {cls} AUC {_effect(hit)}.")
    if len(flat):
        lo, hi = flat["delta"].min(), flat["delta"].max()
        rng = f"Δ = {lo:+.3f}" if len(flat) == 1 else f"Δ from {lo:+.3f} to {hi:+.3f}"
        p = fmt_p(flat["p_value"].min()).replace("=", "≥" if len(flat) > 1 else "=")
        where = _spans(list(flat["fraction"]), order)
        out.append(
            f"At {where} the difference was within noise ({rng}, {p})."
            if out
            else f"{name} made no measurable difference to {cls} AUC at {where} ({rng}, {p})."
        )
    if len(rows) > len(known):
        miss = _spans(list(rows.loc[~np.isfinite(rows["delta"]), "fraction"]), order)
        out.append(f"{name}: no comparison at {miss} (a side has no finished seed).")
    return out


def verdict(table: pd.DataFrame, cls: str) -> str:
    """A plain-language verdict for one class: did GAN augmentation help, where, how sure."""
    rows = table[table["class"] == cls]
    if rows.empty:
        have = ", ".join(map(str, table["class"].unique()))
        raise RareganError(f"class {cls!r} is not in the AUC table (it has: {have})")
    order = sorted(rows["fraction"].unique())
    none, gan = rows[rows["arm"] == "none"], rows[rows["arm"] == "gan"]
    if len(none) and (none["n_pos"].fillna(1) == 0).all():
        return f"{cls}: no verdict: the test set has no positive {cls} images, so AUC is undefined."
    parts = _arm_sentences(gan, cls, "GAN augmentation", order)
    parts += _arm_sentences(rows[rows["arm"] == "standard"], cls, "Standard augmentation", order)
    seeds = rows.loc[rows["n_seeds"] > 0, "n_seeds"]
    if len(seeds):
        k = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        few = ", and so few seeds barely sample training randomness" if seeds.min() < 3 else ""
        parts.append(f"Each AUC averages {k} seed(s); the CIs cover seeds and test patients{few}.")
    if gan["significant"].any():
        n = int(np.isfinite(rows["delta"]).sum())
        parts.append(f"Of {n} comparisons, about 1 in 20 null ones passes p < 0.05 by chance.")
    for _, r in gan[gan["significant"]].iterrows():
        spread = rows.loc[rows["fraction"] == r["fraction"], "seed_std"].max()
        if np.isfinite(spread) and spread >= abs(r["delta"]) / 2:
            parts.append(
                f"At {fmt_fraction(r['fraction'])} the seed-to-seed spread (std {spread:.3f}) "
                "is comparable to the difference: it may not replicate."
            )
    width = (none["hi"] - none["lo"]).max() if len(none) else np.nan
    if np.isfinite(width) and width > 0.1:
        n_pos = int(none["n_pos"].max())
        parts.append(f"CIs are wide (up to ±{width / 2:.3f}): only {n_pos} test positives.")
    bad = rows[(rows["n_failed"] + rows["n_pending"]) > 0]
    if len(bad):
        where = ", ".join(
            f"{r.arm} at {fmt_fraction(r.fraction)} ({r.note})" for r in bad.itertuples()
        )
        parts.append(f"Incomplete cells: {where}; those means rest on fewer seeds.")
    base = none.set_index("fraction")["paper_auc"]
    said = [
        f"{r.paper_auc - base.get(r.fraction, np.nan):+.3f} at {fmt_fraction(r.fraction)}"
        for r in gan.itertuples()
        if np.isfinite(r.paper_auc - base.get(r.fraction, np.nan))
    ]
    if said:
        parts.append(
            f"Sundaram & Hulkund 2021 reported Δ(gan − none) of {', '.join(said)} "
            "(one seed, no CI)."
        )
    return " ".join(parts)

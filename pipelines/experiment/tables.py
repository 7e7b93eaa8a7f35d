"""The experiment's AUC table rendered: number formats, the readable view, files and verdicts.

Fractions, p-values, an AUC with its CI and a Δ as text (`fmt_*`); the readable wide view (one row
per class × fraction, arms side by side); GitHub-flavoured Markdown tables; `auc_table.csv` and
`auc_table.md` with their legend and notes (`write_tables`); and each class's plain-language
verdict. The numbers themselves come from `stats.auc_table`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.classifier.arms import ARMS
from pipelines.errors import RareganError
from pipelines.experiment.stats import SECOND_COLUMNS, SECONDARY, family_size
from pipelines.runs import atomic_write_text, ensure_writable


def fmt_fraction(frac: float) -> str:
    """10 → '10 %', 2.5 → '2.5 %'."""
    return f"{float(frac):g} %"


def fmt_p(p: float) -> str:
    """'p = 0.032', 'p < 0.001' or 'p n/a'."""
    return "p n/a" if not np.isfinite(p) else "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_ci(value: float, lo: float, hi: float) -> str:
    """'0.812 [0.790, 0.830]'; 'n/a' when undefined, no brackets without an interval."""
    text = f"{value:.3f}" if np.isfinite(value) else "n/a"
    return text + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def fmt_auc(row: pd.Series) -> str:
    """'0.812 [0.790, 0.830]' with failed/pending seeds flagged; 'n/a' when undefined."""
    text = fmt_ci(row["auc"], row["lo"], row["hi"])
    text += f" ⚠ {row['n_failed']} failed" if row["n_failed"] else ""
    return text + (f" · {row['n_pending']} pending" if row["n_pending"] else "")


def fmt_delta(row: pd.Series | None) -> str:
    """'**+0.031 [+0.012, +0.050] p = 0.002, Holm 0.012 ✱**' (bold + ✱ when the Holm-adjusted p
    is below 0.05)."""
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
    out["significant"] = bool(row.get("significant2", False))
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


def auc_view(table: pd.DataFrame) -> pd.DataFrame:
    """The AUCs alone, one row per class × fraction, arms side by side (the Δs: verdict_table):
    narrow enough for a page."""
    present = [a for a in ARMS if a in set(table["arm"])]
    out = []
    for (cls, frac), group in table.groupby(["class", "fraction"], sort=True):
        arm = {r["arm"]: r for _, r in group.iterrows()}
        row = {"class": cls, "fraction": fmt_fraction(frac)}
        row.update({a: fmt_auc(arm[a]) if a in arm else "—" for a in present})
        row["seeds"] = "/".join(str(arm[a]["n_seeds"]) if a in arm else "–" for a in present)
        out.append(row)
    return pd.DataFrame(out)


def reading(row: pd.Series) -> str:
    """A comparison in a word or three, by its Holm-adjusted p: helped, hurt, or no measurable
    difference (n/a without a Δ)."""
    if not np.isfinite(row["delta"]):
        return "n/a"
    if not row["significant"]:
        return "no measurable difference"
    return "helped" if row["delta"] > 0 else "hurt"


def verdict_table(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict at a glance: one row per class, fraction and comparison (every arm − none, and
    each arm − its second reference), Δ AUC [95 % CI], raw and Holm-adjusted p, and its reading."""
    out = []
    for _, r in table.sort_values(["class", "fraction"]).iterrows():
        if r["arm"] == "none":
            continue
        pairs = [(f"{r['arm']} − none", r)]
        if isinstance(r["ref2"], str) and r["ref2"]:
            pairs.append((f"{r['arm']} − {r['ref2']}", _second(r)))
        for name, d in pairs:
            if not np.isfinite(d["delta"]):
                continue
            ci = (
                f" [{d['delta_lo']:+.3f}, {d['delta_hi']:+.3f}]"
                if np.isfinite(d["delta_lo"])
                else ""
            )
            out.append(
                {
                    "class": r["class"],
                    "fraction": fmt_fraction(r["fraction"]),
                    "comparison": name,
                    "Δ AUC [95 % CI]": f"{d['delta']:+.3f}{ci}",
                    "p": fmt_p(d["p_value"])[2:].strip(" =") or "n/a",
                    "Holm p": fmt_p(d["p_holm"])[2:].strip(" =") or "n/a",
                    "reading": reading(d),
                }
            )
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
    "AUC = mean over finished classifier seeds [95 % CI: training randomness (seed spread, "
    "Student's t, S − 1 df) and test sampling (patient bootstrap) combined]. Δ = arm − none, "
    "paired on seeds and patients, with its 95 % CI and two-sided p by the same rule (the CI "
    "excludes 0 exactly when p < 0.05), and Holm's adjusted p over every Δ of the sweep. Primary "
    "comparison: gan − none per class and fraction. **bold ✱** = Holm-adjusted p < 0.05 (the "
    "family: every Δ of the table). ⚠ = failed seeds (the mean rests on fewer seeds)."
)
PAPER_LEGEND = " Paper = Sundaram & Hulkund 2021, one seed."


def legend(table: pd.DataFrame) -> str:
    """The AUC table's legend, naming the paper only where its AUCs stand in the table."""
    return LEGEND + (PAPER_LEGEND if table["paper_auc"].notna().any() else "")


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
    lines = ["# AUC per class, fraction and arm", "", legend(table), "", md_table(wide(table))]
    lines += ["## Notes", "", *notes] if notes else []
    atomic_write_text(paths["md"], "\n".join(lines).rstrip() + "\n")
    return paths


QWK_LEGEND = (
    "QWK = quadratic weighted kappa of the predicted grade (the highest-scoring class) against the "
    "true grade over every test image (1 = perfect agreement, 0 = chance; Cohen 1968): mean over "
    "finished classifier seeds [95 % CI, the same seed + patient interval as the AUC]. Δ = arm − none, "
    "paired on seeds and patients, with its 95 % CI, two-sided p and Holm's adjusted p over the "
    "kappa Δs (a secondary endpoint, adjusted apart from the AUC table's family)."
)


def qwk_view(table: pd.DataFrame) -> pd.DataFrame:
    """The readable kappa table: one row per fraction, arms side by side, then the Δs vs none."""
    present = [a for a in ARMS if a in set(table["arm"])]
    out = []
    for frac, group in table.groupby("fraction", sort=True):
        arm = {r["arm"]: r for _, r in group.iterrows()}
        row = {"fraction": fmt_fraction(frac)}
        row.update({a: fmt_ci(arm[a]["qwk"], arm[a]["lo"], arm[a]["hi"]) for a in arm})
        row.update({f"Δ {a} − none": fmt_delta(arm[a]) for a in present if a != "none"})
        row["seeds"] = "/".join(str(arm[a]["n_seeds"]) if a in arm else "–" for a in present)
        out.append(row)
    return pd.DataFrame(out)


def write_qwk_tables(table: pd.DataFrame, out_dir: Path | str) -> dict[str, Path]:
    """Write `qwk_table.csv` (every column) and `qwk_table.md` (the readable view, its legend)."""
    out = ensure_writable(Path(out_dir))
    paths = {"qwk_csv": out / "qwk_table.csv", "qwk_md": out / "qwk_table.md"}
    atomic_write_text(paths["qwk_csv"], table.to_csv(index=False))
    lines = ["# Ordinal agreement (QWK) per fraction and arm", "", QWK_LEGEND, ""]
    atomic_write_text(paths["qwk_md"], "\n".join(lines) + "\n" + md_table(qwk_view(table)))
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


def _holm(p: float, at_least: bool = False) -> str:
    """', Holm-adjusted p = 0.940' (≥ for the smallest of several); '' where there is none."""
    if not np.isfinite(p):
        return ""
    return ", Holm-adjusted " + fmt_p(p).replace("=", "≥" if at_least and p < 1 else "=")


def _effect(rows: pd.DataFrame) -> str:
    return " and ".join(
        f"by {abs(r['delta']):.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}] at "
        f"{fmt_fraction(r['fraction'])} ({fmt_p(r['p_value'])}{_holm(r['p_holm'])})"
        for _, r in rows.iterrows()
    )


def _second_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """An arm's rows with their second comparison (vs SECONDARY[arm]) in the Δ columns."""
    out = rows[rows["ref2"].fillna("").astype(str) != ""].copy()
    for k, col in SECOND_COLUMNS.items():
        out[k] = out[col]
    out["significant"] = out["significant2"].fillna(False).astype(bool)
    return out


def _arm_sentences(rows: pd.DataFrame, cls: str, name: str, order: list) -> list[str]:
    """What one comparison found, fraction by fraction: raised, lowered or within noise, with the
    raw and the Holm-adjusted p."""
    known = rows[np.isfinite(rows["delta"])]
    flat, out = known[~known["significant"]], []
    for sign, verb in ((1, "raised"), (-1, "lowered")):
        hit = known[known["significant"] & (np.sign(known["delta"]) == sign)]
        if len(hit):
            out.append(f"{name} {verb} {cls} AUC {_effect(hit)}.")
    if len(flat):
        lo, hi = flat["delta"].min(), flat["delta"].max()
        one = flat.iloc[0]
        rng = (
            f"Δ = {lo:+.3f} [{one['delta_lo']:+.3f}, {one['delta_hi']:+.3f}]"
            if len(flat) == 1
            else f"Δ from {lo:+.3f} to {hi:+.3f}"
        )
        p = fmt_p(flat["p_value"].min()).replace("=", "≥" if len(flat) > 1 else "=")
        p += _holm(flat["p_holm"].min(), len(flat) > 1)
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


def _fidelity_sentences(fidelity: pd.DataFrame | None, cls: str) -> list[str]:
    """How good the GANs behind the gan arm were, per fraction: the range over seeds of their C2ST
    beside real vs real, of their precision and recall, and of their utility (synth_only's AUC beside
    none's) where the sweep ran synth_only. `fidelity`: `sweep.gan_quality`'s rows
    (the report's fidelity table); those measured on `cls` from GANs with the filter bank count."""
    if fidelity is None or "c2st" not in fidelity:
        return []
    mine = fidelity[(fidelity["studied"] == cls) & fidelity["filter_bank"]]
    out = []
    for frac, g in mine.groupby("fraction", sort=True):
        if g["c2st"].notna().any():
            real = _span(g, "c2st_real")
            real = f"real vs real {real}; " if real else ""
            pr = f"precision {_span(g, 'precision')}, recall {_span(g, 'recall')}"
            pr_real = (_span(g, "precision_real"), _span(g, "recall_real"))
            pr += " (real vs real {} and {})".format(*pr_real) if all(pr_real) else ""
            out.append(
                f"The {len(g)} GAN(s) behind the gan arm at {fmt_fraction(frac)}: C2ST AUC "
                f"{_span(g, 'c2st', '.3f')} ({real}0.5 = indistinguishable from held-out real "
                f"images of {cls}, 1 = always told apart), {pr}."
            )
        if "utility" in g and g["utility"].notna().any():
            out.append(
                f"Trained with their samples as its only {cls} positives (synth_only, train on "
                f"synthetic, test on real), the classifier at {fmt_fraction(frac)} scored {cls} "
                f"test AUC {_span(g, 'utility', '.3f')}, with the real positives (none) "
                f"{_span(g, 'utility_real', '.3f')}."
            )
    return out


def _span(frame: pd.DataFrame, col: str, f: str = ".2f") -> str:
    """A column's range as text: '0.95–0.99', one value alone, '' when it has none."""
    v = frame[col].dropna()
    if v.empty:
        return ""
    return format(v.min(), f) if v.min() == v.max() else f"{v.min():{f}}–{v.max():{f}}"


def verdict(table: pd.DataFrame, cls: str, fidelity: pd.DataFrame | None = None) -> str:
    """A plain-language verdict for one class: did GAN augmentation help (gan − none), did the filter
    bank in front of the GAN matter (gan − gan_nofilter), did the GAN add to standard augmentation
    (gan_standard − standard), where, how sure (raw and Holm-adjusted p), and, given the sweep's
    GAN `fidelity` rows (the report's), how good the GANs behind it were."""
    rows = table[table["class"] == cls]
    if rows.empty:
        have = ", ".join(map(str, table["class"].unique()))
        raise RareganError(f"class {cls!r} is not in the AUC table (it has: {have})")
    order = sorted(rows["fraction"].unique())
    none, gan = rows[rows["arm"] == "none"], rows[rows["arm"] == "gan"]
    if len(none) and (none["n_pos"].fillna(1) == 0).all():
        return f"{cls}: no verdict: the test set has no positive {cls} images, so AUC is undefined."
    parts = _arm_sentences(gan, cls, "GAN augmentation (gan − none)", order)
    for arm, name in (
        ("diffusion", "Diffusion augmentation (diffusion − none)"),
        ("gan_pretrain", "GAN pretraining, then fine-tuning on real images (gan_pretrain − none)"),
        ("gan_ratio", "GAN augmentation at the ratio chosen on validation (gan_ratio − none)"),
    ):
        parts += _arm_sentences(rows[rows["arm"] == arm], cls, name, order)
    for arm, name in (
        ("gan", "The filter bank in front of the GAN (gan − gan_nofilter)"),
        ("gan_standard", "The GAN on top of standard augmentation (gan_standard − standard)"),
        (
            "diffusion_standard",
            "Diffusion on top of standard augmentation (diffusion_standard − standard)",
        ),
        (
            "gan_pretrain",
            "Pretraining on the GAN's images instead of mixing them in (gan_pretrain − gan)",
        ),
        ("gan_ratio", "Choosing the ratio on validation instead of a fixed one (gan_ratio − gan)"),
    ):
        parts += _arm_sentences(_second_rows(rows[rows["arm"] == arm]), cls, name, order)
    parts += _arm_sentences(
        rows[rows["arm"] == "standard"], cls, "Standard augmentation (standard − none)", order
    )
    parts += _fidelity_sentences(fidelity, cls)
    seeds = rows.loc[rows["n_seeds"] > 0, "n_seeds"]
    if len(seeds):
        k = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        few = ", and so few seeds barely sample training randomness" if seeds.min() < 3 else ""
        parts.append(f"Each AUC averages {k} seed(s); the CIs cover seeds and test patients{few}.")
    n = family_size(table)
    if n:
        parts.append(
            f"Raised / lowered means Holm-adjusted p < 0.05 over the family of all {n} comparisons "
            "in the table; a raw p < 0.05 alone is called within noise."
        )
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

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
from pipelines.experiment.stats import SECOND_COLUMNS, SECONDARY
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


def second_comparison(row: pd.Series) -> pd.Series:
    """The arm's second comparison (vs SECONDARY[arm]) in fmt_delta's shape."""
    out = pd.Series({k: row[col] for k, col in SECOND_COLUMNS.items()})
    out["significant"] = bool(row.get("significant2", False))
    return out


def _auc_rows(table: pd.DataFrame):
    """Per class × fraction: a row with its AUCs by arm, the arms' table rows, the arms present."""
    present = [a for a in ARMS if a in set(table["arm"])]
    for (cls, frac), group in table.groupby(["class", "fraction"], sort=True):
        arm = {r["arm"]: r for _, r in group.iterrows()}
        row = {"class": cls, "fraction": fmt_fraction(frac)}
        row.update({a: fmt_auc(arm[a]) if a in arm else "—" for a in present})
        yield row, arm, present


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """The readable view: one row per class × fraction, arms side by side, Δs, the paper's AUCs."""
    out = []
    for row, arm, present in _auc_rows(table):
        for a in present[1:] if present[:1] == ["none"] else present:
            row[f"Δ {a} − none"] = fmt_delta(arm.get(a))
        for a, ref in SECONDARY.items():
            if a in present and ref in present:
                row[f"Δ {a} − {ref}"] = (
                    fmt_delta(second_comparison(arm[a])) if a in arm and arm[a]["ref2"] else "—"
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
    out = []
    for row, arm, present in _auc_rows(table):
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
            pairs.append((f"{r['arm']} − {r['ref2']}", second_comparison(r)))
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

"""The verdict in words, per class: did each comparison raise or lower the AUC (by its Holm-adjusted
p), where, by how much and how sure, with how good the generators behind it were; the report and
`compare` print it beside the tables of `tables.py`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.errors import RareganError
from pipelines.experiment.stats import SECOND_COLUMNS, family_size
from pipelines.experiment.tables import fmt_fraction, fmt_p


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


# whose samples a generator kind's fidelity sentence describes
BEHIND = {
    "pggan": "GAN(s) behind the gan arm",
    "diffusion": "diffusion model(s) behind the diffusion arm",
}


def _fidelity_sentences(fidelity: pd.DataFrame | None, cls: str) -> list[str]:
    """How good the generators behind the gan (and diffusion) arms were, per fraction and kind: the range over seeds of their C2ST
    beside real vs real, of their precision and recall, and of their utility (synth_only's AUC beside
    none's) where the sweep ran synth_only. `fidelity`: `sweep.gan_quality`'s rows
    (the report's fidelity table); those measured on `cls` from GANs with the filter bank count."""
    if fidelity is None or "c2st" not in fidelity:
        return []
    mine = fidelity[(fidelity["studied"] == cls) & fidelity["filter_bank"]]
    if "generator" not in mine:  # frames made before diffusion models joined: PGGANs
        mine = mine.assign(generator="pggan")
    out = []
    for (frac, kind), g in mine.groupby(["fraction", "generator"], sort=True):
        if g["c2st"].notna().any():
            real = _span(g, "c2st_real")
            real = f"real vs real {real}; " if real else ""
            pr = f"precision {_span(g, 'precision')}, recall {_span(g, 'recall')}"
            pr_real = (_span(g, "precision_real"), _span(g, "recall_real"))
            pr += " (real vs real {} and {})".format(*pr_real) if all(pr_real) else ""
            out.append(
                f"The {len(g)} {BEHIND.get(kind, kind)} at {fmt_fraction(frac)}: C2ST AUC "
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

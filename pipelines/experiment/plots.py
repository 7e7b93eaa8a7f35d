"""The experiment's figures: AUC vs training fraction per arm (with the paper's points), FID/KID.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot state, no display),
rendered to PNG bytes and written atomically; the same table gives the same bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipelines.classifier.arms import ARMS
from pipelines.errors import RareganError
from pipelines.images import save_figure

ARM_STYLE = {
    "none": {"color": "#4d4d4d", "marker": "o", "label": "no augmentation"},
    "standard": {"color": "#1f77b4", "marker": "s", "label": "standard augmentation"},
    "filters": {"color": "#7570b3", "marker": "X", "label": "filter-bank copies"},
    "gan_nofilter": {"color": "#e6ab02", "marker": "v", "label": "GAN without the filter bank"},
    "gan": {"color": "#d95f02", "marker": "^", "label": "GAN augmentation"},
    "gan_standard": {"color": "#a6761d", "marker": "P", "label": "GAN + standard augmentation"},
    "synth_only": {"color": "#1b9e77", "marker": "*", "label": "synthetic positives only (TSTR)"},
    "diffusion": {"color": "#e7298a", "marker": "D", "label": "diffusion augmentation"},
    "diffusion_standard": {"color": "#66a61e", "marker": "d", "label": "diffusion + standard aug."},
    "gan_pretrain": {"color": "#8c564b", "marker": "p", "label": "GAN pretraining, real fine-tune"},
    "gan_ratio": {"color": "#17becf", "marker": "h", "label": "GAN, ratio chosen on val"},
}
PAPER_LABEL = "Sundaram & Hulkund 2021"
DODGE = 1.045  # arms side by side at a fraction: neighbours 4.5 % apart on the log axis


def _fraction_axis(ax, fractions) -> None:
    """Log x axis with a tick and a '10 %' label at each fraction."""
    fractions = sorted(float(f) for f in fractions)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g} %" for f in fractions])
    ax.minorticks_off()
    if fractions:
        ax.set_xlim(fractions[0] / 1.4, fractions[-1] * 1.4)
    ax.set_xlabel("training fraction (patients)")


def _draw_class(ax, table: pd.DataFrame, cls: str, paper: bool = False) -> None:
    """One class: per arm a line through its AUCs with a whisker for each 95 % CI, the arms set side
    by side around each fraction so that no interval hides another (bands of six arms merged into
    one blob, and a band at a single fraction draws nothing); the paper's points as hollow diamonds
    if `paper`."""
    rows = table[table["class"] == cls].sort_values("fraction")
    if rows.empty:
        have = ", ".join(map(str, table["class"].unique()))
        raise RareganError(f"class {cls!r} is not in the AUC table (it has: {have})")
    present = [arm for arm in ARMS if (rows["arm"] == arm).any()]
    for k, arm in enumerate(present):
        part = rows[rows["arm"] == arm]
        style = ARM_STYLE[arm]
        x = part["fraction"].to_numpy(float) * DODGE ** (k - (len(present) - 1) / 2)
        auc = part["auc"].to_numpy(float)
        # a one-seed interval is the bootstrap's percentiles, which need not hold the mean
        whisker = np.vstack([auc - part["lo"].to_numpy(float), part["hi"].to_numpy(float) - auc])
        whisker = np.clip(whisker, 0.0, None)
        ax.errorbar(x, auc, yerr=whisker, color=style["color"], marker=style["marker"], ms=5,
                    capsize=2, lw=1.2, elinewidth=1, label=style["label"])  # fmt: skip
        if paper:
            pts = np.isfinite(part["paper_auc"].astype(float)).to_numpy()
            ax.plot(x[pts], part["paper_auc"][pts], ls="none", marker="D",
                    mfc="white", mec=style["color"], mew=1.5, ms=7)  # fmt: skip
    if not np.isfinite(rows["auc"]).any():
        note = rows["note"].dropna().iloc[0] if rows["note"].notna().any() else "no AUC"
        ax.text(0.5, 0.5, textwrap.fill(note, 34), transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
    _fraction_axis(ax, rows["fraction"].unique())
    ax.set_title(cls)
    ax.set_ylabel("test AUC (mean over seeds, 95 % CI)")
    ax.grid(True, alpha=0.3)


def _legend_handles(axes, paper: bool) -> tuple[list, list]:
    """Each arm's line once over all panels, and the paper's hollow diamond when it is drawn."""
    by_label = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    handles, labels = list(by_label.values()), list(by_label)
    if paper:
        handles.append(
            Line2D([], [], ls="none", marker="D", mfc="white", mec="black", mew=1.5, ms=7)
        )
        labels.append(f"{PAPER_LABEL} (one seed)")
    return handles, labels


def _legend_below(fig: Figure, handles: list, labels: list) -> None:
    """A legend under the panels (constrained layout), in as many columns as fit the figure."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8)
        if ncol == 1 or legend.get_window_extent(renderer).width <= 0.96 * fig.bbox.width:
            return
        legend.remove()


def auc_vs_fraction(
    table: pd.DataFrame, out_png: Path | str, cls: str, paper: bool = False
) -> Path:
    """AUC vs training fraction for one class: a line per arm with CI whiskers (paper's points if `paper`)."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    _draw_class(ax, table, cls, paper)
    ax.legend(*_legend_handles([ax], paper), loc="best", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png)


def class_panels(classes: list[str], height: float) -> tuple[Figure, np.ndarray]:
    """A figure with one panel per class, three to a row (the unused ones hidden)."""
    if not classes:
        raise RareganError("the AUC table is empty: no class to plot; run the sweep first")
    cols = min(3, len(classes))
    nrows = -(-len(classes) // cols)
    fig = Figure(figsize=(4.6 * cols, height * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    return fig, axes


def auc_vs_fraction_all_figure(table: pd.DataFrame, paper: bool = False) -> Figure:
    """Every class of the table side by side, with one shared legend below that fits the figure."""
    classes = list(dict.fromkeys(table["class"]))
    fig, axes = class_panels(classes, 3.8)
    for ax, cls in zip(axes, classes, strict=False):
        _draw_class(ax, table, cls, paper)
    _legend_below(fig, *_legend_handles(axes[: len(classes)], paper))
    return fig


def auc_vs_fraction_all(table: pd.DataFrame, out_png: Path | str, paper: bool = False) -> Path:
    """Write `auc_vs_fraction_all_figure(table, paper)` as PNG."""
    return save_figure(auc_vs_fraction_all_figure(table, paper), out_png)


def delta_whiskers_figure(table: pd.DataFrame) -> Figure:
    """Δ AUC (arm − none) per class: a dot with its 95 % CI whisker per arm at each fraction (arms
    side by side, no bands), a line at 0; a filled dot where the Holm-adjusted p is below 0.05."""
    rows = table[(table["arm"] != "none") & np.isfinite(table["delta"].astype(float))]
    classes = list(dict.fromkeys(rows["class"])) or list(dict.fromkeys(table["class"]))
    fig, axes = class_panels(classes, 3.6)
    arms = [a for a in ARMS if a in set(rows["arm"])]
    for ax, cls in zip(axes, classes, strict=False):
        part = rows[rows["class"] == cls]
        fractions = sorted(part["fraction"].unique())
        width = 0.8 / max(1, len(arms))
        for i, arm in enumerate(arms):
            mine = part[part["arm"] == arm].set_index("fraction")
            style = ARM_STYLE[arm]
            for j, frac in enumerate(fractions):
                if frac not in mine.index:
                    continue
                r = mine.loc[frac]
                x = j - 0.4 + width * (i + 0.5)
                lo, hi = r["delta_lo"] - r["delta"], r["delta_hi"] - r["delta"]
                err = [[-lo], [hi]] if np.isfinite(lo) else None
                ax.errorbar(
                    x, r["delta"], yerr=err, color=style["color"], marker=style["marker"],
                    mfc=style["color"] if r["significant"] else "white", capsize=3, ls="none",
                    label=style["label"] if j == 0 else None,
                )  # fmt: skip
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(fractions)), [f"{f:g} %" for f in fractions])
        ax.set_xlabel("training fraction (patients)")
        ax.set_ylabel("Δ test AUC vs none (95 % CI)")
        ax.set_title(cls)
        ax.grid(True, axis="y", alpha=0.3)
    _legend_below(fig, *_legend_handles(axes[: len(classes)], False))
    return fig


def delta_whiskers(table: pd.DataFrame, out_png: Path | str) -> Path:
    """Write `delta_whiskers_figure(table)` as PNG."""
    return save_figure(delta_whiskers_figure(table), out_png)


def fid_kid(frame: pd.DataFrame, out_png: Path | str, reference: str = "") -> Path:
    """FID (and KID where given) of the synthetic images per class vs training fraction."""
    missing = [c for c in ("class", "fraction", "fid") if c not in frame]
    if missing:
        raise RareganError(
            f"FID/KID table lacks columns {missing}; it needs class, fraction, fid, kid"
        )
    metrics = ["fid"] + (["kid"] if "kid" in frame and frame["kid"].notna().any() else [])
    space = " / ".join(sorted(set(frame.get("feature_space", pd.Series(["random-feature"])))))
    fig = Figure(figsize=(5.2 * len(metrics), 4.0))
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    frame = frame.groupby(["class", "fraction"], as_index=False)[metrics].mean()  # over GAN seeds
    for ax, metric in zip(axes, metrics, strict=True):
        for cls, part in frame.sort_values("fraction").groupby("class", sort=True):
            ax.plot(part["fraction"].to_numpy(float), part[metric], marker="o", label=str(cls))
        _fraction_axis(ax, frame["fraction"].unique())
        ax.set_ylabel(f"{space} {metric.upper()} (lower = closer to real)")
        ax.set_title(f"{space} {metric.upper()} vs {reference or 'real images'}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_png)

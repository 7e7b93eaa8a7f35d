"""The experiment's report: `report.md` and a self-contained `report.html` (figures as data URIs).

Both are rendered from one list of blocks (heading, paragraph, list, table, figure, code), so
they say the same thing; the HTML needs no network: inline CSS, no scripts, images embedded.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipelines.errors import RareganError
from pipelines.experiment import plots
from pipelines.experiment.paper import CAVEATS, CITATION, shows_paper
from pipelines.experiment.predictions import check_cells
from pipelines.experiment.tables import (
    QWK_LEGEND,
    auc_view,
    fmt_fraction,
    legend,
    md_table,
    qwk_view,
    verdict_table,
    write_qwk_tables,
    write_tables,
)
from pipelines.experiment.verdict import verdict
from pipelines.runs import atomic_write_text, ensure_writable

_KNEE = (
    "Chen P. (2018). Knee Osteoarthritis Severity Grading Dataset. Mendeley Data v1, "
    "doi:10.17632/56rmx5bjcr.1 (derived from the Osteoarthritis Initiative). License: CC BY 4.0."
)
DATA_CITATIONS = {
    "chexpert": "Irvin J. et al. (2019). CheXpert: A Large Chest Radiograph Dataset with "
    "Uncertainty Labels and Expert Comparison. AAAI 2019.",
    "nih": "Wang X. et al. (2017). ChestX-ray8: Hospital-scale Chest X-ray Database and "
    "Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases. "
    "CVPR 2017. NIH Clinical Center; released for public use without restriction.",
    "kermany": "Kermany D., Zhang K., Goldbaum M. (2018). Labeled Optical Coherence Tomography "
    "(OCT) and Chest X-Ray Images for Classification. Mendeley Data v2, doi:10.17632/rscbjbr9sj.2. "
    "License: CC BY 4.0.",
    "knee": _KNEE,
    "folders": _KNEE,
    "phantoms": None,  # synthetic: no citation
}
PHANTOM_WARNING = (
    "Smoke test, not science: these results come from synthetic phantoms, data that exercise "
    "the pipeline. Nothing here says whether GAN augmentation helps on real X-rays; the "
    "real-data results are in the repository's docs/results/ (README.md there)."
)
QUESTION = (
    "Does training a progressive-growing GAN on a rare class (after a cheap filter "
    "pre-augmentation of that class) and mixing its samples into the classifier's training "
    "data raise the classifier's test AUC on that class, compared with no augmentation and "
    "with standard augmentation, and at which fraction of the training data?"
)
PRIMARY = (
    "Primary comparison, named before any result: Δ AUC(gan − none) for each rare class and "
    "fraction. Every other Δ (standard − none, …) is secondary; all of them enter the Holm "
    "adjustment."
)
VERDICT_LEGEND = (
    "At a glance: each comparison's Δ test AUC with its 95 % CI (seeds and test patients), raw and "
    "Holm-adjusted p (the family: every comparison below); 'helped' / 'hurt' only where the "
    "Holm-adjusted p < 0.05. The full AUC table and the reasoning follow."
)
METHOD = (
    "Every arm and seed is scored on the same fixed test split; each seed trains its own "
    "classifier. Each seed's AUC is also computed on B resamples of the test patients (all images "
    "of a drawn patient kept; one resample stream shared by every cell, so arms are paired on "
    "patients). An arm's AUC is the mean over its finished seeds; its 95 % CI combines two "
    "independent errors of that mean: training randomness, from the spread of the seeds (s/√S, "
    "expanded by Student's t with S − 1 degrees of freedom), and test sampling, from the spread of "
    "the seed mean over the patient resamples (expanded by the normal quantile), added in "
    "quadrature. In simulation this covers a known Δ in 95–98 % of sweeps from 3 seeds on, where a "
    "percentile bootstrap over 3 seeds covers 79–91 %. Δ(arm − none) pairs the arms on the seeds "
    "both finished and on patients and gets the same interval; its two-sided p is the smallest "
    "1 − level whose interval reaches 0, so the CI excludes 0 exactly when p < 0.05. Holm's (1979) "
    "step-down adjustment over every Δ of the sweep (both references: the family the verdict counts) "
    "is shown beside the raw p, and it alone decides the ✱ marks and the verdict's raised / "
    "lowered: a raw p < 0.05 whose adjusted p is not is called within noise. With one seed there "
    "is no seed part: the interval and p are the patient bootstrap's (percentile, B = "
    "compare.n_boot draws; a p near 0.05 then has Monte-Carlo SD √(0.05·0.95/B), 0.005 at B = "
    "2000) and cover test sampling only."
)


def data_citation(context: dict) -> str:
    """The data source's citation: context['data_citation'] or DATA_CITATIONS[context['source']]."""
    source = context.get("source")
    if source is not None and source not in DATA_CITATIONS:
        raise RareganError(
            f"unknown data source {source!r} for the report; use one of {', '.join(DATA_CITATIONS)}"
        )
    if context.get("data_citation"):
        return str(context["data_citation"])
    if source == "phantoms":
        return "Synthetic phantoms generated by raregan (no citation). " + PHANTOM_WARNING
    if source is None:
        return "Data source not recorded: cite the data set you used."
    return DATA_CITATIONS[source]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "class"


def _figures(out: Path, table: pd.DataFrame, context: dict) -> list[tuple[Path, str]]:
    """Draw the AUC figures (and FID/KID when given) into `out`; (path, caption) pairs."""
    classes = list(dict.fromkeys(table["class"]))
    paper = shows_paper(context.get("source"))
    figs = []
    if np.isfinite(table["delta"].astype(float)).any():
        figs.append(
            (
                plots.delta_whiskers(table, out / "delta_vs_none.png"),
                "Δ test AUC (arm − none) per fraction: dot = mean over paired seeds, whisker = 95 % "
                "CI (seeds and test patients); filled = Holm-adjusted p < 0.05.",
            )
        )
    figs += [
        (
            plots.auc_vs_fraction_all(table, out / "auc_vs_fraction.png", paper),
            "Test AUC vs training fraction, all classes: dot = mean over seeds, whisker = 95 % CI "
            "(seeds and test patients); the arms stand side by side around each fraction"
            + (f"; hollow diamonds: {plots.PAPER_LABEL} (one seed, CheXpert)." if paper else "."),
        )
    ]
    for cls in classes:
        path = plots.auc_vs_fraction(table, out / f"auc_vs_fraction_{_slug(cls)}.png", cls, paper)
        figs.append((path, f"{cls}: test AUC vs training fraction per arm."))
    if context.get("fid_kid") is not None:
        frame = pd.DataFrame(context["fid_kid"])
        held = "fid_heldout" in frame and frame["fid_heldout"].notna().all()
        if held:  # real images the generators never saw: the fair reference (no KID there)
            frame = frame.assign(fid=frame["fid_heldout"]).drop(columns=["kid"], errors="ignore")
        reference = (
            "held-out real images (val/test positives of patients the generator never saw)"
            if held
            else "the generator's own training images (its positives after the filter bank)"
        )
        path = plots.fid_kid(
            frame, out / "fid_kid.png", "held-out real" if held else "training images"
        )
        space = " / ".join(sorted(set(frame.get("feature_space", pd.Series(["random-feature"])))))
        caption = (
            f"{space} FID{'' if held else ' and KID'} of the generators' samples against {reference}"
            + (
                " (features of a fixed, seeded random conv net: not Inception FID; comparable"
                " only between runs of this report)"
                if "random-feature" in space
                else ""
            )
            + "."
        )
        figs.append((path, caption))
    return figs


def _images(context: dict, out_dir: Path) -> list[tuple[Path, str]]:
    """The extra images the context names (grids, nearest pairs), copied into `out_dir/images`.

    The copies keep the report folder self-contained: it can be moved or committed as it is.
    """
    out = []
    for k, item in enumerate(context.get("images") or []):
        path, caption = (item["path"], item.get("caption", "")) if isinstance(item, dict) else item
        path = Path(path)
        if not path.is_file():
            raise RareganError(f"report image {path} not found; produce it first or leave it out")
        copy = out_dir / "images" / f"{k:02d}-{path.parent.parent.name}-{path.name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)
        out.append((copy, str(caption)))
    return out


def _failed(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells that did not finish (failed, pending, or done without a DONE marker)."""
    cells = check_cells(cells)
    bad = cells[cells["status"] != "done"].sort_values(["class", "fraction", "arm", "seed"])
    bad = bad[["class", "fraction", "arm", "seed", "status", "error"]].copy()
    bad["fraction"] = bad["fraction"].map(fmt_fraction)
    return bad


FIDELITY = (
    "Each GAN behind a Δ, measured against real images of its class that it never saw (val and "
    "test positives of other patients): C2ST, the held-out AUC of a small CNN telling samples from "
    "those images (0.5: indistinguishable; mean of 5 folds, 95 % t-interval; Lopez-Paz & Oquab "
    "2017), beside the same test between the GAN's own training images and them (real vs real); "
    "k-NN precision and recall (k = 3; Kynkäänniemi et al. 2019) with the real-vs-real values in "
    "brackets; near copies: samples closer to a training image than real images are to each "
    "other; memorized: samples closer to a training image than 99 % of held-out real images are "
    "(about 1 % for a generator that does not copy; target ≤ 1 %). 'n/a': too few held-out images for the test. With the synth_only arm, TSTR (train on "
    "synthetic, test on real): the class's test AUC of the classifier of that fraction and seed whose "
    "only positives of the class were this GAN's samples, with the none arm's (the real positives) in "
    "brackets."
)


def fidelity_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per GAN: C2ST with its interval and real-vs-real, precision/recall, near copies, and
    its utility (train on synthetic, test on real) where the sweep ran synth_only."""

    def num(v: float, f: str = ".3f") -> str:
        return "n/a" if pd.isna(v) else format(v, f)

    tstr = "utility" in frame and frame["utility"].notna().any()  # the sweep ran synth_only
    rows = []
    for r in frame.to_dict("records"):
        c2st = num(r.get("c2st", float("nan")))
        if c2st != "n/a":
            c2st += f" [{num(r['c2st_low'])}, {num(r['c2st_high'])}]"
        rows.append({
            "class": r["class"],
            "fraction": fmt_fraction(r["fraction"]),
            "seed": r["seed"],
            "C2ST AUC": c2st,
            "real vs real": num(r.get("c2st_real", float("nan"))),
            "precision (real)": f"{num(r.get('precision', float('nan')), '.2f')} "
            f"({num(r.get('precision_real', float('nan')), '.2f')})",
            "recall (real)": f"{num(r.get('recall', float('nan')), '.2f')} "
            f"({num(r.get('recall_real', float('nan')), '.2f')})",
            "near copies": num(r.get("near_copies", float("nan")), ".1%"),
        })  # fmt: skip
        if pd.notna(r.get("memorized", float("nan"))):
            rows[-1]["memorized"] = num(r["memorized"], ".1%")
        if tstr:
            rows[-1]["TSTR AUC (real)"] = f"{num(r['utility'])} ({num(r['utility_real'])})"
    return pd.DataFrame(rows)


def _blocks(table, cells, context, figs, images) -> list[tuple[str, object]]:
    """The report's content, in order, as (kind, payload) blocks."""
    title = context.get("title") or "raregan: does GAN augmentation of rare classes help?"
    b: list[tuple[str, object]] = [("h1", title)]
    if context.get("source") == "phantoms":  # the first thing a demo's reader sees
        b.append(("p", f"**⚠ {PHANTOM_WARNING}**"))
    b += [("h2", "The question"), ("p", QUESTION)]
    if context.get("dataset"):
        b.append(("p", f"Data set: {context['dataset']}."))
    fidelity = None if context.get("fid_kid") is None else pd.DataFrame(context["fid_kid"])
    b += [("p", PRIMARY), ("h2", "Verdict")]
    at_a_glance = verdict_table(table)
    if len(at_a_glance):
        b += [("p", VERDICT_LEGEND), ("table", at_a_glance)]
    b.append(("ul", [verdict(table, c, fidelity) for c in dict.fromkeys(table["class"])]))
    paper = shows_paper(context.get("source"))
    heading = "AUC per class, fraction and arm" + (", beside the paper's" if paper else "")
    b += [("h2", heading), ("p", legend(table))]
    b.append(("table", auc_view(table)))
    notes = table[table["note"].fillna("") != ""]
    if len(notes):
        b.append(("ul", [f"{r['class']}, {fmt_fraction(r['fraction'])}, {r['arm']}: "
                         f"{r['note']}" for _, r in notes.iterrows()]))  # fmt: skip
    if context.get("qwk") is not None:
        b += [("h3", "Ordinal agreement: quadratic weighted kappa per fraction and arm")]
        b += [("p", QWK_LEGEND), ("table", qwk_view(context["qwk"]))]
    if fidelity is not None and "c2st" in fidelity:
        b += [("h3", "How good each GAN was"), ("p", FIDELITY)]
        b.append(("table", fidelity_table(fidelity)))
    if paper:  # left out where the paper's CheXpert numbers are not comparable
        b += [("h3", "The paper's numbers")]
        b += [("p", f"{CITATION} Their caveats:"), ("ul", list(CAVEATS))]
    b += [("h2", "Method"), ("p", METHOD)]
    b += [("h2", "Figures"), *[("img", f) for f in figs]]
    if images:
        b += [("h2", "Synthetic images and memorization checks"), *[("img", i) for i in images]]
    failed = _failed(cells)
    b.append(("h2", "Failed and pending cells"))
    b.append(("table", failed) if len(failed) else ("p", "None: every cell finished."))
    b += [("h2", "Data"), ("p", data_citation(context))]
    b += [("h2", "How to reproduce"), ("p", "Commands, in order:")]
    b.append(("code", "\n".join(context.get("commands") or ["(commands not recorded)"])))
    if context.get("config") is not None:
        b += [("p", "Resolved configuration:")]
        b.append(("code", yaml.safe_dump(context["config"], sort_keys=False).rstrip()))
    for note in context.get("notes") or []:
        b.append(("p", str(note)))
    return b


def to_markdown(blocks: list[tuple[str, object]], out_dir: Path) -> str:
    """Markdown of the blocks; figures linked by paths relative to `out_dir`."""
    parts = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + str(x))
        elif kind == "p":
            parts.append(str(x))
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in x))
        elif kind == "table":
            parts.append(md_table(x).rstrip())
        elif kind == "img":
            path, caption = x
            parts.append(f"![{caption}]({os.path.relpath(path, out_dir)})\n\n*{caption}*")
        elif kind == "code":
            parts.append(f"```\n{x}\n```")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape for HTML, then **bold** → <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(str(text)))


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; display: block;
        max-width: 100%; overflow-x: auto; }
td { overflow-wrap: anywhere; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td strong { color: #a33a00; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def to_html(blocks: list[tuple[str, object]], title: str) -> str:
    """One self-contained HTML page: inline CSS, images as base64 data URIs, no scripts."""
    body = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(x)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(x)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in x) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(c)}</th>" for c in x.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(v)}</td>" for v in r) + "</tr>"
                for r in x.itertuples(index=False)
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            path, caption = x
            body.append(
                f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
                f"<figcaption>{_inline(caption)}</figcaption></figure>"
            )
        elif kind == "code":
            body.append(f"<pre>{html.escape(str(x))}</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(
    out_dir: Path | str, table: pd.DataFrame, cells: pd.DataFrame, context: dict
) -> dict:
    """Write report.md, report.html, the AUC tables and figures into `out_dir`; their paths.

    `table` is `tables.auc_table(cells)`. Context keys (all optional): title, dataset, source
    (a DATA_CITATIONS key), data_citation (text, wins over source), commands (list of the exact
    commands), config (the resolved config dict), images (list of {path, caption} or
    (path, caption): real vs synthetic grids, nearest-pair grids…), fid_kid (`sweep.gan_quality`'s
    frame: class, studied, filter_bank, fraction, fid, kid and the held-out figures of
    sweep.held), qwk (`stats.qwk_table` of an ordinal task: qwk_table.csv/.md and a report
    section), notes (list of extra paragraphs).
    """
    out = ensure_writable(Path(out_dir))
    paths = write_tables(table, out)
    if context.get("qwk") is not None:
        paths |= write_qwk_tables(context["qwk"], out)
    images = _images(context, out)
    figs = _figures(out, table, context)
    blocks = _blocks(table, cells, context, figs, images)
    title = str(blocks[0][1])
    paths["report_md"] = out / "report.md"
    paths["report_html"] = out / "report.html"
    atomic_write_text(paths["report_md"], to_markdown(blocks, out))
    atomic_write_text(paths["report_html"], to_html(blocks, title))
    paths["figures"] = [p for p, _ in figs]
    return paths

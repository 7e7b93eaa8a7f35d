"""Plots and the report: valid deterministic PNGs, a self-contained HTML page, citations, caveats."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from pipelines.errors import RareganError
from pipelines.experiment import plots
from pipelines.experiment.paper import CAVEATS, CITATION, PAPER_AUC
from pipelines.experiment.report import DATA_CITATIONS, data_citation, write_report
from pipelines.experiment.stats import auc_table
from pipelines.experiment.tables import write_tables
from pipelines.experiment.verdict import verdict

ARMS = ("none", "standard", "gan")


def make_sweep(root) -> pd.DataFrame:
    """Fracture at 1 % and 100 %, 3 arms × 2 seeds (gan better at 1 %), one failed cell."""
    rng = np.random.default_rng(0)
    n_img = rng.integers(1, 4, size=80)
    patient = np.repeat([f"P{p:02d}" for p in range(80)], n_img)
    y = np.repeat((rng.random(80) < 0.25).astype(float), n_img)
    ids = [f"img{i:03d}" for i in range(len(y))]
    rows = []
    for frac in (1, 100):
        for arm in ARMS:
            for seed in (0, 1):
                cell = {"class": "Fracture", "fraction": frac, "arm": arm, "seed": seed}
                if (frac, arm, seed) == (100, "gan", 1):
                    rows.append(cell | {"status": "failed", "run": None, "error": "disk full"})
                    continue
                gain = 2.0 if (arm, frac) == ("gan", 1) else 1.0
                score = gain * y + rng.normal(size=len(y))
                run = root / f"{frac}-{arm}-{seed}"
                run.mkdir(parents=True)
                frame = pd.DataFrame({"image_id": ids, "patient": patient, "Fracture": y})
                frame.assign(**{"score:Fracture": score}).to_csv(
                    run / "predictions.csv", index=False
                )
                (run / "DONE").write_text("{}")
                rows.append(cell | {"status": "done", "run": str(run), "error": ""})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cells = make_sweep(tmp_path_factory.mktemp("sweep"))
    return cells, auc_table(cells, n_boot=200)


def png_pixels(path) -> np.ndarray:
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
    return np.asarray(img.convert("L"), dtype=float)


def test_auc_plots_are_valid_deterministic_and_show_the_paper(sweep, tmp_path):
    _, table = sweep
    one = plots.auc_vs_fraction(table, tmp_path / "a" / "fracture.png", "Fracture")
    pixels = png_pixels(one)
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.01, "an empty or blank figure"
    again = plots.auc_vs_fraction(table, tmp_path / "b.png", "Fracture")
    assert again.read_bytes() == one.read_bytes(), "same table, same bytes"
    png_pixels(plots.auc_vs_fraction_all(table, tmp_path / "all.png"))
    with pytest.raises(RareganError, match="'Hernia' is not in the AUC table"):
        plots.auc_vs_fraction(table, tmp_path / "c.png", "Hernia")
    ax = Figure().add_subplot()
    plots._draw_class(ax, table, "Fracture", paper=True)
    diamonds = [ln for ln in ax.lines if ln.get_marker() == "D"]
    assert [list(ln.get_ydata()) for ln in diamonds] == [
        [PAPER_AUC["Fracture"][f][i] for f in (1, 100)] for i in range(3)
    ]
    means = [bars.lines[0] for bars in ax.containers]
    gan = table[table["arm"] == "gan"].sort_values("fraction")["auc"]
    assert np.allclose(means[2].get_ydata(), gan)


def test_every_arms_interval_is_drawn_apart_even_at_a_single_fraction(sweep):
    """The knee sweep has one fraction: CI bands (fill_between over one x) drew nothing there, and
    at several fractions six overlapping bands merged; each arm's interval is now a whisker of its
    own, from lo to hi, at an x of its own."""
    _, table = sweep
    one = table[(table["fraction"] == table["fraction"].max()) & (table["class"] == "Fracture")]
    ax = Figure().add_subplot()
    plots._draw_class(ax, one, "Fracture")
    assert len(ax.containers) == one["arm"].nunique() >= 3
    xs = []
    for bars, (_, row) in zip(ax.containers, one.set_index("arm").loc[
        [a for a in plots.ARMS if a in set(one["arm"])]].iterrows(), strict=True):  # fmt: skip
        (segments,) = bars.lines[2]
        (x0, y0), (x1, y1) = segments.get_segments()[0]
        assert (
            x0 == x1 and np.isclose(min(y0, y1), row["lo"]) and np.isclose(max(y0, y1), row["hi"])
        )
        xs.append(x0)
    assert len(set(xs)) == len(xs), "two arms' whiskers on top of each other"


def test_fid_kid_plot(tmp_path):
    frame = pd.DataFrame(
        {"class": ["Fracture"] * 3 + ["Lung Lesion"] * 3, "fraction": [1, 10, 100] * 2,
         "fid": [120.0, 90, 60, 150, 110, 80], "kid": [0.1, 0.08, 0.05, 0.12, 0.1, 0.07]}
    )  # fmt: skip
    both = png_pixels(plots.fid_kid(frame, tmp_path / "fk.png"))
    fid_only = png_pixels(plots.fid_kid(frame.drop(columns="kid"), tmp_path / "f.png"))
    assert both.shape[1] > 1.5 * fid_only.shape[1], "KID adds a second panel"
    with pytest.raises(RareganError, match=r"lacks columns \['fid'\]"):
        plots.fid_kid(frame.drop(columns="fid"), tmp_path / "x.png")


def test_html_report_is_self_contained_and_says_it_all(sweep, tmp_path):
    cells, table = sweep
    grid = tmp_path / "grid.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(grid)
    pairs = tmp_path / "pairs.jpg"
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(pairs)
    context = {
        "source": "kermany",
        "dataset": "Kermany pediatric pneumonia",
        "commands": ["raregan sweep --data ../shared/data/chest_xray --config cpu-demo"],
        "config": {"size": 64, "seeds": [0, 1]},
        "images": [{"path": grid, "caption": "real vs synthetic Fracture"}, (pairs, "nearest")],
        "fid_kid": pd.DataFrame(
            {
                "class": ["Fracture"] * 2,
                "fraction": [1, 100],
                "fid": [100.0, 50.0],
                "kid": [0.1, 0.05],
            }
        ),  # fmt: skip
    }
    paths = write_report(tmp_path / "report", table, cells, context)
    page = paths["report_html"].read_text()
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page), "every asset must be embedded"
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(paths["figures"]) + 2
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == paths["figures"][0].read_bytes()
    assert Image.open(io.BytesIO(base64.b64decode(srcs[-1].split(",", 1)[1]))).size == (32, 32)
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert verdict(table, "Fracture") in text
    # the paper's CheXpert numbers are not comparable to Kermany: its section is left out
    assert CITATION not in text and "The paper's numbers" not in text
    # the verdict opens with a small table, the AUC table is the AUCs alone, Δs as whiskers
    assert "At a glance" in text and "gan − none" in text and "comparison" in text
    assert text.index("At a glance") < text.index("AUC per class, fraction and arm")
    assert paths["figures"][0].name == "delta_vs_none.png"
    assert "of the generators' samples against the generator's own training images" in text
    assert not any(c in text for c in CAVEATS), "CheXpert caveats beside Kermany results mislead"
    assert DATA_CITATIONS["kermany"] in text and "real vs synthetic Fracture" in text
    assert "disk full" in text and "raregan sweep --data" in text and "seeds:" in text
    assert "<strong>" in page, "significant Δ is bold"
    md = paths["report_md"].read_text()
    assert verdict(table, "Fracture") in md and "disk full" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (paths["report_md"].parent / link).is_file()
        assert not link.startswith(".."), "the report folder is self-contained"
    assert paths["csv"].is_file() and paths["md"].is_file()


def test_data_citations_and_phantom_warning(sweep, tmp_path):
    cells, table = sweep
    assert "Irvin" in DATA_CITATIONS["chexpert"] and "AAAI" in DATA_CITATIONS["chexpert"]
    assert "Wang" in DATA_CITATIONS["nih"] and "rscbjbr9sj.2" in DATA_CITATIONS["kermany"]
    assert "56rmx5bjcr.1" in DATA_CITATIONS["knee"] == DATA_CITATIONS["folders"]
    assert "not science" in data_citation({"source": "phantoms"})
    assert data_citation({"source": "nih", "data_citation": "My data"}) == "My data"
    with pytest.raises(RareganError, match="unknown data source 'mnist'"):
        data_citation({"source": "mnist"})
    paths = write_report(tmp_path, table, cells, {"source": "phantoms"})
    md = paths["report_md"].read_text()
    # the report opens with it (before the question), and says where the real results are
    assert md.index("Smoke test, not science") < md.index("## The question")
    assert "docs/results/" in md
    with pytest.raises(RareganError, match="report image .*missing.png not found"):
        write_report(tmp_path, table, cells, {"images": [(tmp_path / "missing.png", "x")]})


def test_paper_diamonds_only_when_asked_and_only_for_chexpert(sweep, tmp_path):
    cells, table = sweep
    ax = Figure().add_subplot()
    plots._draw_class(ax, table, "Fracture")  # the default: no paper points
    assert not [ln for ln in ax.lines if ln.get_marker() == "D" and ln.get_mfc() == "white"]

    def legend_texts(fig) -> list[str]:
        return [t.get_text() for t in fig.legends[0].get_texts()]

    assert not any(
        plots.PAPER_LABEL in t for t in legend_texts(plots.auc_vs_fraction_all_figure(table))
    )
    with_paper = plots.auc_vs_fraction_all_figure(table, paper=True)
    assert any(plots.PAPER_LABEL in t for t in legend_texts(with_paper))
    for source, shown in (("kermany", False), ("nih", False), ("chexpert", True)):
        paths = write_report(tmp_path / source, table, cells, {"source": source})
        md = paths["report_md"].read_text()
        assert ("hollow diamonds" in md) == shown, source
        assert ("beside the paper's" in md) == shown, source
        assert all((c in md) == shown for c in CAVEATS), source


def test_auc_legend_names_the_paper_only_when_its_numbers_are_in_the_table(sweep, tmp_path):
    _, table = sweep
    assert table["paper_auc"].notna().any(), "the fixture carries the paper's CheXpert AUCs"
    with_paper = write_tables(table, tmp_path / "with")["md"].read_text()
    without = write_tables(table.assign(paper_auc=np.nan), tmp_path / "without")["md"].read_text()
    assert "Sundaram & Hulkund" in with_paper and "| paper " in with_paper
    assert "Sundaram & Hulkund" not in without and "| paper " not in without


def test_all_class_legend_fits_inside_the_figure_below_the_panels(sweep):
    """One class with the paper's entry (the cut-off case of docs/results/kermany-viral)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _, table = sweep
    for frame in (table, pd.concat([table, table.assign(**{"class": "Lung Lesion"})])):
        fig = plots.auc_vs_fraction_all_figure(frame, paper=True)
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        box, page = fig.legends[0].get_window_extent(renderer), fig.bbox
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= page.x1 and box.y1 <= page.y1, box
        lowest = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible())
        assert box.y1 <= lowest + 1, "the legend overlaps a panel"


def test_each_gan_behind_a_delta_is_shown_with_its_fidelity_or_why_not(sweep, tmp_path):
    """The report's GAN table: C2ST with its interval beside real-vs-real, P/R beside their
    baselines, near copies; n/a where gan-eval skipped the held-out comparisons."""
    from pipelines.experiment.sweep import held

    full = {
        "c2st": {"auc": 0.91, "ci_low": 0.85, "ci_high": 0.97},
        "c2st_real_baseline": {"auc": 0.56},
        "precision": 0.4, "recall": 0.25,
        "pr_real_baseline": {"precision": 0.8, "recall": 0.7},
        "memorization": {"frac_near_copies": 0.02},
    }  # fmt: skip
    skipped = {key: None for key in full} | {"memorization": {"frac_near_copies": 0.0}}
    frame = pd.DataFrame(
        [{"class": "viral", "studied": "viral", "filter_bank": True, "fraction": 100.0,
          "seed": 0, "fid": 1.0, "kid": 0.1} | held(full),
         {"class": "viral", "studied": "viral", "filter_bank": True, "fraction": 25.0,
          "seed": 0, "fid": 2.0, "kid": 0.2} | held(skipped)]
    )  # fmt: skip
    cells, table = sweep
    out = write_report(tmp_path / "r", table, cells, {"fid_kid": frame, "source": "kermany"})
    md = (tmp_path / "r" / "report.md").read_text()
    assert "How good each GAN was" in md
    assert "0.910 [0.850, 0.970]" in md and "| 0.560 |" in md
    assert "0.40 (0.80)" in md and "0.25 (0.70)" in md and "2.0%" in md
    row25 = next(line for line in md.splitlines() if line.startswith("| viral | 25"))
    assert row25.count("n/a") >= 3
    assert out is not None

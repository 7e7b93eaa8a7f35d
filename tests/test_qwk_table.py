"""The kappa table of ordinal sweeps: seed means against direct kappas, Δ vs none, files, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_tables import N_BOOT, SEEDS, make_sweep

from classify.metrics import quadratic_weighted_kappa
from pipelines.errors import RareganError
from pipelines.experiment.stats import qwk_table
from pipelines.experiment.tables import write_qwk_tables


def write_graded_cell(root, test, arm, seed, noise):
    """One finished cell of an ordinal task: one-hot grades 0-4, scores = one-hot of the grade
    plus noise, so the predicted grade (argmax) is right more often when `noise` is small."""
    rng = np.random.default_rng([("none", "gan").index(arm), seed])
    frame = test.copy()
    scores = np.eye(5)[test["grade"]] + rng.normal(0, noise, (len(test), 5))
    for g in range(5):
        frame[str(g)] = (test["grade"] == g).astype(float)
        frame[f"score:{g}"] = scores[:, g]
    run = root / f"{arm}-{seed}"
    run.mkdir(parents=True)
    frame.drop(columns="grade").to_csv(run / "predictions.csv", index=False)
    (run / "DONE").write_text("{}\n")
    return run, frame


def graded_sweep(root, classes=("4",)):
    """Grades of ~150 patients, arms none (noisier) and gan, 3 seeds; cells rows for `classes`."""
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(150), rng.integers(1, 3, 150))
    test = pd.DataFrame({"image_id": [f"k{i}" for i in range(len(patients))]})
    test["patient"] = [f"P{p}" for p in patients]
    test["grade"] = rng.choice(5, len(test), p=[0.4, 0.2, 0.2, 0.12, 0.08])
    rows, frames = [], {}
    for arm, noise in (("none", 0.9), ("gan", 0.4)):
        for seed in SEEDS:
            run, frames[arm, seed] = write_graded_cell(root, test, arm, seed, noise)
            for cls in classes:
                rows.append({"class": cls, "fraction": 100.0, "arm": arm, "seed": seed,
                             "status": "done", "run": str(run), "error": ""})  # fmt: skip
    return pd.DataFrame(rows), frames


def test_qwk_table_means_direct_kappas_and_finds_the_better_arm(tmp_path):
    cells, frames = graded_sweep(tmp_path)
    table = qwk_table(cells, n_boot=N_BOOT).set_index("arm")
    for arm in ("none", "gan"):
        direct = [
            quadratic_weighted_kappa(
                f[[str(g) for g in range(5)]].to_numpy().argmax(1),
                f[[f"score:{g}" for g in range(5)]].to_numpy().argmax(1),
                5,
            )
            for (a, _), f in frames.items()
            if a == arm
        ]
        row = table.loc[arm]
        assert row["qwk"] == pytest.approx(np.mean(direct)) and row["n_seeds"] == 3
        assert row["lo"] < row["qwk"] < row["hi"]
    assert np.isnan(table.loc["none", "delta"])
    gan = table.loc["gan"]
    assert gan["delta"] == pytest.approx(gan["qwk"] - table.loc["none", "qwk"])
    assert 0 < gan["delta_lo"] and gan["significant"] and gan["p_holm"] >= gan["p_value"]
    # one classifier scores every grade: studying two classes does not count it twice
    two, _ = graded_sweep(tmp_path / "two", classes=("3", "4"))
    again = qwk_table(two, n_boot=N_BOOT).set_index("arm")
    assert again[["qwk", "lo", "hi", "delta"]].equals(table[["qwk", "lo", "hi", "delta"]])


def test_qwk_tables_written_and_refused_for_multilabel(tmp_path):
    cells, _ = graded_sweep(tmp_path / "cells")
    paths = write_qwk_tables(qwk_table(cells, n_boot=N_BOOT), tmp_path / "out")
    md = paths["qwk_md"].read_text()
    assert "quadratic weighted kappa" in md and "| 100 % |" in md and "Δ gan − none" in md
    assert len(pd.read_csv(paths["qwk_csv"])) == 2
    with pytest.raises(RareganError, match="single-label"):
        qwk_table(make_sweep(tmp_path / "multilabel"), n_boot=N_BOOT)  # Effusion NaN for some


def test_tables_from_predictions_read_once_equal_tables_read_from_the_cells(tmp_path, monkeypatch):
    """compare reads every cell's predictions once and hands them to both tables."""
    from pipelines.experiment import predictions
    from pipelines.experiment.stats import auc_table

    cells, _ = graded_sweep(tmp_path)
    reads = []
    load = predictions.load_predictions
    monkeypatch.setattr(predictions, "load_predictions", lambda p: reads.append(p) or load(p))
    collected = predictions.collect(cells)
    assert len(reads) == len(cells)  # one read per finished cell
    pd.testing.assert_frame_equal(
        qwk_table(collected, n_boot=N_BOOT), qwk_table(cells, n_boot=N_BOOT)
    )
    pd.testing.assert_frame_equal(
        auc_table(collected, n_boot=N_BOOT, paper=False),
        auc_table(cells, n_boot=N_BOOT, paper=False),
    )

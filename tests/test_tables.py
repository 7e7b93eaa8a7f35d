"""The AUC table: seed means, paired patient-bootstrap CIs and Δs, failed cells, verdicts, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from classify.metrics import PatientBootstrap, auc_with_ci, paired_delta
from pipelines.errors import RareganError
from pipelines.experiment.paper import PAPER_AUC
from pipelines.experiment.predictions import collect, load_predictions
from pipelines.experiment.stats import auc_table
from pipelines.experiment.tables import write_tables
from pipelines.experiment.verdict import verdict

LABELS = ("Fracture", "Hernia", "Effusion")
FRACTIONS = (1, 10, 50, 100)
PLANTED = (1, 10)  # fractions where the gan arm's Fracture scores are truly better
SEEDS = (0, 1, 2)
N_BOOT = 200


def fake_test_set(n_patients: int = 200, seed: int = 0) -> pd.DataFrame:
    """~200 patients with 1–3 images; Fracture ~20 % of patients, Hernia never positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        frac, eff = float(rng.random() < 0.2), float(rng.random() < 0.4)
        for j in range(int(rng.integers(1, 4))):
            row = {"image_id": f"img{p:03d}_{j}", "patient": f"P{p:03d}"}
            rows.append(row | {"Fracture": frac, "Hernia": 0.0, "Effusion": eff if j else np.nan})
    return pd.DataFrame(rows)


ARM_KEYS = ("none", "standard", "gan", "filters", "gan_nofilter", "gan_standard")


def write_cell(root, test, cls, frac, arm, seed, dup=False, patient_per_image=False, signal=None):
    """One finished cell: predictions.csv (rows shuffled) and DONE; returns the cells-table row.
    The class's score carries its label with weight `signal` (default: 3 for gan at the PLANTED
    fractions, else 1) plus unit noise."""
    rng = np.random.default_rng([int(frac), ARM_KEYS.index(arm), seed])
    frame = test.copy()
    for name in LABELS:
        strength = 3.0 if (name == cls and arm == "gan" and frac in PLANTED) else 1.0
        strength = signal if (signal is not None and name == cls) else strength
        frame[f"score:{name}"] = strength * frame[name].fillna(0) + rng.normal(size=len(frame))
    if dup:  # every image twice, same patient, same label and score
        twin = frame.assign(image_id=frame["image_id"] + "_dup")
        frame = pd.concat([frame, twin], ignore_index=True)
    if patient_per_image:
        frame["patient"] = frame["image_id"]
    run = root / f"{cls}-{frac}-{arm}-{seed}"
    run.mkdir(parents=True)
    frame.sample(frac=1.0, random_state=seed).to_csv(run / "predictions.csv", index=False)
    (run / "DONE").write_text("{}\n")
    return {"class": cls, "fraction": frac, "arm": arm, "seed": seed, "status": "done",
            "run": str(run), "error": ""}  # fmt: skip


def make_sweep(root) -> pd.DataFrame:
    """Fracture over 4 fractions × 3 arms × 3 seeds (one failed, one pending), Hernia at 10 %."""
    test = fake_test_set()
    rows = []
    for frac in FRACTIONS:
        for arm in ("none", "standard", "gan"):
            for seed in SEEDS:
                if (frac, arm, seed) == (50, "gan", 2):
                    rows.append({"class": "Fracture", "fraction": 50, "arm": "gan", "seed": 2,
                                 "status": "failed", "run": None, "error": "CUDA out of memory"})  # fmt: skip
                elif (frac, arm, seed) == (100, "standard", 2):
                    rows.append({"class": "Fracture", "fraction": 100, "arm": "standard",
                                 "seed": 2, "status": "pending", "run": None, "error": ""})  # fmt: skip
                else:
                    rows.append(write_cell(root, test, "Fracture", frac, arm, seed))
    for arm in ("none", "standard", "gan"):
        rows += [write_cell(root, test, "Hernia", 10, arm, s) for s in SEEDS[:2]]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cells = make_sweep(tmp_path_factory.mktemp("sweep"))
    return cells, auc_table(cells, n_boot=N_BOOT, seed=0)


def row_of(table, cls, frac, arm) -> pd.Series:
    hit = table[(table["class"] == cls) & (table["fraction"] == frac) & (table["arm"] == arm)]
    assert len(hit) == 1
    return hit.iloc[0]


def direct_auc(run, cls) -> float:
    frame = pd.read_csv(f"{run}/predictions.csv").dropna(subset=[cls])
    pos, neg = (
        frame.loc[frame[cls] == 1, f"score:{cls}"],
        frame.loc[frame[cls] == 0, f"score:{cls}"],
    )
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


def test_means_equal_direct_per_seed_auc_average_and_ci_contains_them(sweep):
    cells, table = sweep
    fracture = table[table["class"] == "Fracture"]
    assert len(fracture) == len(FRACTIONS) * 3
    for _, r in fracture.iterrows():
        done = cells[(cells[["class", "fraction", "arm"]] == r[["class", "fraction", "arm"]].values)
                     .all(axis=1) & (cells["status"] == "done")]  # fmt: skip
        aucs = [direct_auc(run, "Fracture") for run in done["run"]]
        assert r["n_seeds"] == len(aucs)
        assert r["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert r["seed_std"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        assert r["lo"] < r["auc"] < r["hi"]
        assert r["paper_auc"] == PAPER_AUC["Fracture"][r["fraction"]][("none", "standard", "gan")
                                                                      .index(r["arm"])]  # fmt: skip


def test_single_seed_matches_paired_patient_bootstrap_of_classify_metrics(sweep):
    cells, _ = sweep
    one = cells[(cells["class"] == "Fracture") & (cells["fraction"] == 1) & (cells["seed"] == 0)]
    table = auc_table(one, n_boot=N_BOOT, seed=3)
    coll = collect(one)
    y = coll["labels"]["Fracture"]
    none, gan = (coll["scores"][("Fracture", 1, arm, 0)] for arm in ("none", "gan"))
    ref = paired_delta(y, none, gan, coll["patient"], n_boot=N_BOOT, seed=3)
    r = row_of(table, "Fracture", 1, "gan")
    assert (r["delta"], r["delta_lo"], r["delta_hi"], r["p_value"]) == pytest.approx(
        (ref["delta"], ref["lo"], ref["hi"], ref["p_value"]), abs=1e-12
    )
    # pairing across cells relies on one resample stream, whatever chunk size a cell's ties give
    bs = PatientBootstrap(coll["patient"], len(y), N_BOOT, seed=3)
    chunked = [np.concatenate(list(bs.multiplicities(c))) for c in (7, N_BOOT)]
    assert np.array_equal(*chunked)
    single = auc_with_ci(y, gan, coll["patient"], n_boot=N_BOOT, seed=3)
    assert (r["auc"], r["lo"], r["hi"]) == pytest.approx(
        (single["auc"], single["lo"], single["hi"]), abs=1e-12
    )


def test_planted_gain_is_significant_and_null_differences_are_not(sweep):
    _, table = sweep
    for frac in FRACTIONS:
        gan = row_of(table, "Fracture", frac, "gan")
        std = row_of(table, "Fracture", frac, "standard")
        assert gan["delta_lo"] <= gan["delta"] <= gan["delta_hi"]
        if frac in PLANTED:
            assert (
                gan["significant"] and gan["delta_lo"] > 0 and gan["p_value"] < 0.05
            )  # 3 seeds: t(2) is wide by design
        else:
            assert not gan["significant"] and gan["p_value"] > 0.05
        assert not std["significant"] and std["p_value"] > 0.05
    assert np.isnan(row_of(table, "Fracture", 1, "none")["delta"])


def test_duplicating_each_patients_images_does_not_narrow_the_ci(tmp_path):
    test = fake_test_set(n_patients=120, seed=5)
    for seeds in ((0,), (0, 1)):
        widths = {}
        for name, kw in {"base": {}, "dup": {"dup": True},
                         "image_level": {"dup": True, "patient_per_image": True}}.items():  # fmt: skip
            rows = [write_cell(tmp_path / f"{name}-{len(seeds)}", test, "Fracture", 1, arm, s, **kw)
                    for arm in ("none", "gan") for s in seeds]  # fmt: skip
            r = row_of(auc_table(pd.DataFrame(rows), n_boot=N_BOOT), "Fracture", 1, "gan")
            widths[name] = (r["hi"] - r["lo"], r["delta_hi"] - r["delta_lo"])
        assert widths["dup"] == pytest.approx(widths["base"], abs=1e-9)
        if len(seeds) == 1:  # the patient part alone (with 2 seeds their t(1) spread dominates)
            # the control: treating each image as its own patient would wrongly narrow both
            assert all(
                i < 0.85 * b for i, b in zip(widths["image_level"], widths["base"], strict=True)
            )


def test_failed_and_pending_cells_are_counted_and_named(sweep, tmp_path):
    _, table = sweep
    failed = row_of(table, "Fracture", 50, "gan")
    assert (failed["n_failed"], failed["n_seeds"]) == (1, 2)
    assert "CUDA out of memory" in failed["errors"] and "1 seed(s) failed" in failed["note"]
    pending = row_of(table, "Fracture", 100, "standard")
    assert (pending["n_pending"], pending["n_seeds"]) == (1, 2)
    text = verdict(table, "Fracture")
    assert "Incomplete cells" in text and "gan at 50 %" in text
    paths = write_tables(table, tmp_path / "out")
    md = paths["md"].read_text()
    assert "⚠ 1 failed" in md and "1 pending" in md and "CUDA out of memory" in md


def test_done_status_without_done_marker_counts_as_failed(sweep):
    cells, _ = sweep
    one = cells[(cells["class"] == "Hernia")].copy()
    one.loc[one.index[0], "run"] = "/nonexistent/run"
    coll = collect(one)
    assert (coll["cells"]["status"] == "failed").sum() == 1
    assert "no DONE marker" in coll["cells"].loc[0, "error"]


def test_record_files_give_the_same_table_as_run_folders(sweep, tmp_path):
    """Cells read from gzip'd record predictions (run folders gone) give the identical table."""
    cells, table = sweep
    moved = cells.assign(predictions="")
    for i in moved.index[moved["status"] == "done"]:
        frame = pd.read_csv(f"{moved.at[i, 'run']}/predictions.csv")
        moved.at[i, "predictions"] = str(tmp_path / f"cell{i}.csv.gz")
        frame.to_csv(moved.at[i, "predictions"], index=False)
        moved.at[i, "run"] = str(tmp_path / "gone" / str(i))
    pd.testing.assert_frame_equal(auc_table(moved, n_boot=N_BOOT, seed=0), table)
    (tmp_path / "cell0.csv.gz").unlink()
    coll = collect(moved[moved["class"] == "Fracture"])
    assert coll["cells"].loc[0, "status"] == "failed"
    assert "cell0.csv.gz is missing" in coll["cells"].loc[0, "error"]


def test_label_without_test_positives_gives_nan_and_note(sweep):
    _, table = sweep
    for arm in ("none", "standard", "gan"):
        r = row_of(table, "Hernia", 10, arm)
        assert np.isnan(r["auc"]) and np.isnan(r["lo"]) and r["n_pos"] == 0
        assert "no positive Hernia images in the test set" in r["note"]
        assert not r["significant"]
    assert "no verdict" in verdict(table, "Hernia")


def test_tables_written_as_csv_and_markdown(sweep, tmp_path):
    _, table = sweep
    paths = write_tables(table, tmp_path)
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    assert np.allclose(back["auc"], table["auc"], equal_nan=True)
    md = paths["md"].read_text()
    r = row_of(table, "Fracture", 1, "gan")
    assert f"{r['auc']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" in md
    assert f"**{r['delta']:+.3f} [" in md and "✱" in md
    assert "| Fracture | 1 % |" in md and "0.656" in md  # the paper's gan AUC at 1 %
    assert md.count("\n| Fracture |") == len(FRACTIONS)


def test_verdict_says_where_gan_helped_and_where_it_was_noise(sweep):
    _, table = sweep
    text = verdict(table, "Fracture")
    assert text.startswith("GAN augmentation (gan − none) raised Fracture AUC by")
    assert "at 1 % (" in text and "at 10 % (" in text
    assert "At 50–100 % the difference was within noise" in text
    assert "Standard augmentation (standard − none) made no measurable difference" in text
    assert "3 seed(s)" in text or "2–3 seed(s)" in text
    assert "Sundaram & Hulkund 2021 reported" in text
    assert "≥ 1.000" not in text  # a Holm p of 1 is not a lower bound
    with pytest.raises(RareganError, match="'Pneumonia' is not in the AUC table"):
        verdict(table, "Pneumonia")


def test_verdict_names_each_comparison_its_holm_p_and_the_gans_fidelity(tmp_path):
    """gan − gan_nofilter and gan_standard − standard get their own sentences with raw and
    Holm-adjusted p, and the GANs' C2ST/precision/recall ranges stand beside them."""
    test = fake_test_set(seed=3)
    signal = {"none": 1.0, "standard": 1.0, "gan_nofilter": 1.0, "gan": 2.5, "gan_standard": 1.0}
    rows = [write_cell(tmp_path, test, "Fracture", 100, arm, s, signal=v)
            for arm, v in signal.items() for s in SEEDS]  # fmt: skip
    table = auc_table(pd.DataFrame(rows), n_boot=N_BOOT, seed=0)
    nofilter = [
        "Fracture (GAN without the filter bank)",
        "Fracture, by the GAN on Fracture + Effusion (GAN without the filter bank)",
    ]
    fidelity = pd.DataFrame({
        "class": ["Fracture"] * 3 + nofilter,
        "studied": ["Fracture"] * 5, "filter_bank": [True] * 3 + [False] * 2,
        "fraction": [100] * 5, "seed": [0, 1, 2, 0, 0],
        "c2st": [0.95, 0.99, 0.97, 0.5, 0.5], "c2st_real": [0.45, 0.54, 0.5, 0.45, 0.45],
        "precision": [0.77, 0.92, 0.8, 0.1, 0.1], "recall": [0.4, 0.69, 0.5, 0.1, 0.1],
        "precision_real": [0.94, 0.97, 0.95, 0.9, 0.9], "recall_real": [0.68, 0.91, 0.8, 0.9, 0.9],
    })  # fmt: skip
    text = verdict(table, "Fracture", fidelity)
    gan = row_of(table, "Fracture", 100, "gan")
    assert text.startswith("GAN augmentation (gan − none) raised Fracture AUC by")
    assert f"Holm-adjusted p = {gan['p_holm']:.3f}" in text or "Holm-adjusted p < 0.001" in text
    assert "The filter bank in front of the GAN (gan − gan_nofilter) raised Fracture AUC by" in text
    assert f"{gan['delta2']:.3f} [{gan['delta2_lo']:+.3f}, {gan['delta2_hi']:+.3f}]" in text
    plain = row_of(table, "Fracture", 100, "gan_standard")
    assert (
        "The GAN on top of standard augmentation (gan_standard − standard) made no measurable "
        f"difference to Fracture AUC at 100 % (Δ = {plain['delta2']:+.3f} "
        f"[{plain['delta2_lo']:+.3f}, {plain['delta2_hi']:+.3f}], p = {plain['p_value2']:.3f}, "
        f"Holm-adjusted p = {plain['p_holm2']:.3f})"
    ) in text
    # the gan arm's three GANs, not the nofilter ones (whose C2ST 0.5 would widen the range)
    assert (
        "The 3 GAN(s) behind the gan arm at 100 %: C2ST AUC 0.950–0.990 (real vs real 0.45–0.54"
        in text
    )
    assert "precision 0.77–0.92, recall 0.40–0.69" in text
    assert "fidelity" not in verdict(table, "Fracture") and "C2ST" not in verdict(table, "Fracture")
    # a diffusion arm's models are counted apart from the GANs (the sentence counted them as GANs)
    both = pd.concat([fidelity.assign(generator="pggan"),
                      fidelity.iloc[:2].assign(generator="diffusion", c2st=[0.7, 0.8])])  # fmt: skip
    text = verdict(table, "Fracture", both)
    assert "The 3 GAN(s) behind the gan arm at 100 %: C2ST AUC 0.950–0.990" in text
    assert (
        "The 2 diffusion model(s) behind the diffusion arm at 100 %: C2ST AUC 0.700–0.800" in text
    )
    # too few held-out images for the baselines: they are left out, not printed as 'n/a'
    few = verdict(table, "Fracture", fidelity.assign(c2st_real=np.nan, recall_real=np.nan))
    assert "C2ST AUC 0.950–0.990 (0.5 = indistinguishable" in few and "n/a" not in few
    assert "precision 0.77–0.92, recall 0.40–0.69." in few


def test_user_errors_name_the_culprit(sweep, tmp_path):
    cells, _ = sweep
    bad = cells.iloc[:2].copy()
    bad.loc[bad.index[1], "arm"] = "gann"
    with pytest.raises(RareganError, match="row 1: arm 'gann'"):
        collect(bad)
    run = tmp_path / "r"
    run.mkdir()
    frame = pd.read_csv(f"{cells['run'].iloc[0]}/predictions.csv")
    frame.loc[4, "Fracture"] = 2
    frame.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(RareganError, match=r"predictions.csv row 6: column 'Fracture' has 2.0;"):
        load_predictions(run)
    frame.loc[4, "Fracture"] = 1
    frame.iloc[1:].to_csv(run / "predictions.csv", index=False)
    (run / "DONE").write_text("{}")
    other = cells.iloc[:2].copy()
    other.loc[other.index[1], "run"] = str(run)
    with pytest.raises(RareganError, match="is in only one of them; all cells of a sweep"):
        collect(other)
    wrong = cells.iloc[:1].assign(**{"class": "Pneumonia"})
    with pytest.raises(RareganError, match="no columns 'Pneumonia'"):
        collect(wrong)

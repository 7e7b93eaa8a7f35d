"""GAN fidelity against real images the GAN never saw: C2ST, k-NN precision/recall, the real
baselines, heldout.csv, gan-eval end to end, and the synth_only (train on synthetic) arm."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
import torch
from conftest import gan_argv, tiny_config

from pipelines.cli import main
from pipelines.errors import RareganError
from pipelines.fidelity.c2st import c2st, stratified_folds, t_interval
from pipelines.fidelity.distances import knn_radii, manifold_coverage, precision_recall
from pipelines.fidelity.metrics import HELDOUT_KEYS, heldout_report

C2ST_KEYS = {"auc", "ci_low", "ci_high", "accuracy", "n_per_side", "folds", "fold_aucs", "method"}


def textures(n: int, size: int, seed: int, brightness: float = 128.0) -> np.ndarray:
    """n smooth random textures (N, 1, size, size) uint8 around a brightness, each with its own offset."""
    rng = np.random.default_rng(seed)
    smooth = scipy.ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2, 2))
    images = brightness + 40 * smooth / smooth.std() + rng.normal(0, 10, (n, 1, 1))
    return np.clip(images, 0, 255).round().astype(np.uint8)[:, None]


# -- k-NN precision and recall ---------------------------------------------------------------


def brute_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al.'s definitions, one loop per point."""

    def radii(x):
        return np.array([np.sort(np.linalg.norm(x - p, axis=1))[k] for p in x])  # [0] is p itself

    def covered(ref, r, query):
        return np.mean([(np.linalg.norm(ref - q, axis=1) <= r).any() for q in query])

    return covered(real, radii(real), fake), covered(fake, radii(fake), real)


def test_precision_recall_equal_a_brute_force_reference() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.7, 1.3, size=(35, 6))
    got = precision_recall(real, fake, k=3)
    p, r = brute_precision_recall(real, fake, 3)
    assert (got["precision"], got["recall"], got["k"]) == (pytest.approx(p), pytest.approx(r), 3)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # a case that tells them apart
    # blocks of rows give the same radii and coverage as one block
    np.testing.assert_allclose(knn_radii(real, 3, chunk=7), knn_radii(real, 3), rtol=1e-12)
    radii = knn_radii(real, 3)
    assert manifold_coverage(real, radii, fake, chunk=4) == manifold_coverage(real, radii, fake)


def test_precision_recall_known_cases() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 4))
    same = precision_recall(a, a.copy())
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(a, rng.normal(100.0, 1.0, size=(30, 4)))
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # mode collapse: near-copies of 20 points of one of the real set's two clusters are all
    # real-looking (precision 1) but cover at most that cluster (recall from 20 to 30 of 60)
    two_modes = np.concatenate([a, a + 50.0])
    collapsed = precision_recall(two_modes, a[:20] + rng.normal(0, 1e-3, size=(20, 4)))
    assert collapsed["precision"] == 1.0 and 1 / 3 <= collapsed["recall"] <= 0.5


# -- classifier two-sample test --------------------------------------------------------------


def test_stratified_folds_and_t_interval() -> None:
    y = np.r_[np.zeros(23), np.ones(23)]
    fold = stratified_folds(y, 5, np.random.default_rng(0))
    for k in range(5):
        assert abs((y[fold == k] == 0).sum() - (y[fold == k] == 1).sum()) <= 1
    mean, lo, hi = t_interval([0.5, 0.6, 0.7])  # t(0.975, 2) = 4.303, sd 0.1
    assert mean == pytest.approx(0.6) and hi - mean == pytest.approx(4.303 * 0.1 / 3**0.5, 1e-3)
    assert t_interval([0.9, 1.0, 1.0])[2] == 1.0  # clipped to the AUC's range


def test_c2st_is_chance_for_one_distribution_and_leaves_global_state_alone() -> None:
    images = textures(120, 32, seed=1)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    result = c2st(images[:60], images[60:], seed=0)
    assert set(result) >= C2ST_KEYS and result["method"] == "mean of 5 fold AUCs, 95 % t-interval"
    assert result["n_per_side"] == 60 and result["folds"] == len(result["fold_aucs"]) == 5
    assert result["ci_low"] <= 0.5 <= result["ci_high"] and abs(result["auc"] - 0.5) < 0.15
    assert result["auc"] == pytest.approx(np.mean(result["fold_aucs"]))
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert c2st(images[:60], images[60:], seed=0) == result  # seeded: the same numbers again


def test_c2st_separates_bright_from_dark_images() -> None:
    dark, bright = textures(60, 32, seed=2, brightness=80), textures(45, 32, seed=3, brightness=176)
    result = c2st(dark, bright, seed=0)
    assert result["n_per_side"] == 45  # the larger set is subsampled to the smaller
    assert result["auc"] > 0.95 and result["ci_low"] > 0.5 and result["accuracy"] > 0.9


def test_c2st_needs_twenty_images_per_side() -> None:
    images = textures(40, 16, seed=4)
    with pytest.raises(RareganError, match="needs at least 20 images per side.*has 19; add more"):
        c2st(images[:21], images[21:], names=("a", "b"), hint="add more")


def test_heldout_report_sets_synthetic_beside_the_real_baseline() -> None:
    train, held = textures(50, 16, seed=5), textures(40, 16, seed=6)
    fake = textures(70, 16, seed=7, brightness=70)  # a poor generator: too dark
    report = heldout_report(train, held, fake, seed=0, kid=(10, 1000))
    assert set(HELDOUT_KEYS) <= set(report)
    assert report["heldout"] == {"n_heldout": 40, "n_compared": 50, "pr_k": 3}
    ours, base = report["c2st"], report["c2st_real_baseline"]
    assert ours["n_per_side"] == base["n_per_side"] == 40
    assert ours["auc"] > 0.9 and base["ci_low"] <= 0.5 <= base["ci_high"]
    assert report["fid_heldout"] > 5 * report["fid_real_baseline"]
    assert report["kid_heldout"] > report["kid_real_baseline"]
    assert report["precision"] < report["pr_real_baseline"]["precision"]
    assert json.loads(json.dumps(report)) == report


def test_a_gan_of_few_originals_is_still_tested_against_held_out_images() -> None:
    """A small fraction of a rare class (11 originals at 25 %) leaves no real-vs-real baseline, but
    its synthetic images are still compared, whole, with the held-out images."""
    train, held = textures(11, 16, seed=5), textures(40, 16, seed=6)
    fake = textures(33, 16, seed=7, brightness=70)
    report = heldout_report(train, held, fake, seed=0, kid=(10, 1000))
    assert report["c2st"]["n_per_side"] == 33 and report["c2st"]["auc"] > 0.9
    assert report["precision"] is not None and report["fid_heldout"] > 0
    for key in ("c2st_real_baseline", "pr_real_baseline", "fid_real_baseline", "kid_real_baseline"):
        assert report[key] is None
    assert "learned from 11 real images" in report["heldout"]["baseline_skipped"]
    assert json.loads(json.dumps(report)) == report


# -- heldout.csv ------------------------------------------------------------------------------


def test_heldout_positives_are_val_and_test_positives_of_unseen_patients(phantom_root, tmp_path):
    from pipelines.data.prepare import DataSpec, prepare
    from pipelines.gan.run import heldout_positives

    spec = DataSpec(phantom_root, size=16, cache_dir=tmp_path / "store", studied=("Fracture",))
    prepared = prepare(spec, progress=False)
    frame = prepared.records.frame
    held_out_split = frame["split"].isin(["val", "test"])
    for classes in (["Fracture"], ["Fracture", "Lung Lesion"]):
        rows = pd.concat([prepared.positives(c) for c in classes]).drop_duplicates("row")
        expected = frame[held_out_split & (frame[classes] > 0.5).any(axis=1)]
        held = heldout_positives(prepared, classes, rows)
        assert len(held) > 0 and set(held["image_id"]) == set(expected["image_id"])
    # defensively, a patient the GAN saw is never held out, whatever the split says
    planted = pd.concat([rows, expected.iloc[:1]])
    held = heldout_positives(prepared, classes, planted)
    assert expected["patient"].iloc[0] not in set(held["patient"])


# -- end to end on phantoms where Fracture is common ------------------------------------------


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory):
    """A tiny Fracture GAN (16 px) on 400 phantoms with 40 % Fracture: over 20 held-out positives."""
    from pipelines.data.phantoms import write_phantoms

    tmp = tmp_path_factory.mktemp("fidelity")
    root = write_phantoms(tmp / "phantoms", n=400, size=64, seed=1, prevalence={"Fracture": 0.4})
    out = tmp / "gan"
    assert main(gan_argv(root, tmp, out, tiny_config(tmp, kimg=0.06, every=0.1))) == 0
    return tmp, root, out


def gan_eval_cli(run, out, cache, *extra) -> int:
    """`raregan gan-eval` of a run with 48 new samples (out None: its default folder)."""
    argv = ["gan-eval", "--run", run, "--n", "48", "--cache", cache, *extra]
    argv += ["--out", out] if out is not None else []
    return main([str(a) for a in argv])


def test_gan_eval_reports_c2st_and_precision_recall_beside_real_baselines(rich_run, capsys):
    tmp, _, run = rich_run
    positives, heldout = pd.read_csv(run / "positives.csv"), pd.read_csv(run / "heldout.csv")
    assert list(heldout.columns) == list(positives.columns) and len(heldout) >= 20
    assert (heldout["Fracture"] == 1).all() and not set(heldout["patient"]) & set(
        positives["patient"]
    )
    assert gan_eval_cli(run, tmp / "eval", tmp / "store") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "C2ST AUC" in line and "real vs real: C2ST" in line and "95 % t-interval" in line
    report = json.loads((tmp / "eval" / "eval.json").read_text())
    assert set(HELDOUT_KEYS) <= set(report)
    ours, base = report["c2st"], report["c2st_real_baseline"]
    assert set(ours) >= C2ST_KEYS and set(base) >= C2ST_KEYS
    assert report["heldout"]["n_heldout"] == len(heldout)
    assert ours["n_per_side"] == base["n_per_side"] == min(len(heldout), 48, len(positives))
    # 0.3 kimg of training makes blurry blobs: far easier to tell from real films than real films
    # of other patients are
    assert ours["auc"] > 0.9 and ours["auc"] > base["auc"]
    assert report["precision"] <= report["pr_real_baseline"]["precision"]
    assert report["fid_heldout"] > report["fid_real_baseline"] >= 0
    assert 0 <= report["recall"] <= 1 and report["kid_real_baseline"] is not None


def test_gan_eval_without_enough_heldout_images(rich_run, capsys):
    tmp, _, run = rich_run
    old = tmp / "old-run"
    shutil.copytree(run, old)
    (old / "heldout.csv").unlink()  # a run made before heldout.csv existed: a note, no C2ST
    assert gan_eval_cli(old, tmp / "eval-old", tmp / "store") == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("raregan: note:")]
    assert len(notes) == 1 and "rerun of the GAN" in notes[0]
    report = json.loads((tmp / "eval-old" / "eval.json").read_text())
    assert report["c2st"] is None and report["precision"] is None and report["fid"] >= 0
    few = pd.read_csv(run / "heldout.csv").iloc[:12]
    few.to_csv(old / "heldout.csv", index=False)
    assert gan_eval_cli(old, tmp / "eval-few", tmp / "store") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lists 12 held-out real images of Fracture" in err[0]
    assert "--val/--test" in err[0] and "--no-heldout" in err[0]


def test_gan_eval_of_a_checkpoint_samples_that_checkpoints_generator(rich_run, capsys):
    from pggan import generate
    from pipelines.gan.synth import load_generator

    tmp, _, run = rich_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_minutes"] > 0
    # the oldest kept stamped checkpoint is from before the final 16 px stable phase: refused
    early = sorted((run / "checkpoints").glob("kimg*.ckpt"))[0]
    assert gan_eval_cli(run, tmp / "eval-early", tmp / "store", "--checkpoint", early.name) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and early.name in err[0]
    assert "only checkpoints of the final 16 px stable phase" in err[0]
    assert gan_eval_cli(run, tmp / "eval-x", tmp / "store", "--checkpoint", "nope.ckpt") == 2
    assert "last.ckpt" in capsys.readouterr().err  # the message lists what the run holds
    # the final checkpoint holds the finished EMA generator: the very same samples
    G_last, at = load_generator(run, checkpoint=run / "checkpoints" / "last.ckpt")
    G, _ = load_generator(run)
    assert torch.equal(generate(G_last, 8, seed=3), generate(G, 8, seed=3))
    assert at["checkpoint"]["kimg"] == pytest.approx(summary["kimg"])
    assert 0 < at["checkpoint"]["train_minutes"] <= summary["train_minutes"]
    assert gan_eval_cli(run, tmp / "eval-last", tmp / "store", "--checkpoint", "last.ckpt") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"at {summary['kimg']:g} kimg (last.ckpt)" in line and "C2ST AUC" in line
    report = json.loads((tmp / "eval-last" / "eval.json").read_text())
    assert report["checkpoint"]["name"] == "last.ckpt" and report["c2st"] is not None
    assert "-last-n48-s0" in report["synthetic"]
    # the raw generator, whose moving average G_ema is: its own weights, samples and folders
    G_raw, at_raw = load_generator(run, raw=True)  # last.ckpt by default
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    raw_w = {k[2:]: v for k, v in saved["state_dict"].items() if k.startswith("G.")}
    assert all(torch.equal(v, raw_w[k]) for k, v in G_raw.state_dict().items())
    assert not torch.equal(generate(G_raw, 8, seed=3), generate(G, 8, seed=3))
    assert at_raw["checkpoint"]["generator"] == "raw"
    assert gan_eval_cli(run, None, tmp / "store", "--raw-generator") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"at {summary['kimg']:g} kimg (last.ckpt, raw G)" in line and "C2ST AUC" in line
    report = json.loads((run / "eval-last-raw" / "eval.json").read_text())
    assert report["checkpoint"]["generator"] == "raw" and "-last-raw-n48-s0" in report["synthetic"]


# -- synth_only: train on synthetic, test on real ---------------------------------------------


def test_synth_only_trains_on_synthetic_positives_and_no_real_ones(rich_run, capsys):
    from pipelines.classifier.arms import all_labels, arm_rows, datasets
    from pipelines.classifier.run import classifier_fingerprint
    from pipelines.config import load_config
    from pipelines.data.prepare import DataSpec, prepare
    from pipelines.generators.synth import synthesize

    tmp, root, run = rich_run
    synth = synthesize(run, n=40, out=tmp / "synth")
    spec = DataSpec(root, size=16, cache_dir=tmp / "store", studied=("Fracture",))
    prepared = prepare(spec, progress=False)
    names = list(prepared.records.label_names)
    rows = prepared.train_fraction(100.0, 0, ["Fracture"])
    real = arm_rows(rows, "synth_only", ["Fracture"])
    assert not (real["Fracture"] > 0.5).any() and (rows["Fracture"] > 0.5).any()
    assert set(real["image_id"]) == set(rows.loc[~(rows["Fracture"] > 0.5), "image_id"])
    train, *_ = datasets(prepared, real, names, [synth], seen=rows)
    fracture = all_labels(train)[:, names.index("Fracture")] > 0.5
    assert fracture.sum() == 40 and fracture[len(real) :].all()  # the 40 synthetic rows only
    cfg = load_config(None)
    fps = {
        arm: classifier_fingerprint(prepared, cfg, rows, 100.0, arm, "cnn5", ["Fracture"], [synth])
        for arm in ("gan", "synth_only")
    }
    assert fps["gan"]["settings"]["train"] != fps["synth_only"]["settings"]["train"]
    # end to end: scored on the real test split like any arm
    out = tmp / "clf"
    argv = ["classify", "--data", root, "--cache", tmp / "store", "--size", "16", "--model", "cnn5"]
    argv += ["--epochs", "1", "--arm", "synth_only", "--classes", "Fracture", "--synth", synth]
    assert main([str(a) for a in [*argv, "--out", out, "--no-progress"]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    n_positives = len(pd.read_csv(run / "positives.csv"))  # the GAN learned the 100 % fraction
    assert metrics["n_train_real"] == len(rows) - n_positives and metrics["n_train_synthetic"] == 40
    assert metrics["arm"] == "synth_only" and metrics["auc"]["Fracture"]["auc"] is not None
    argv[argv.index("--classes") : argv.index("--classes") + 2] = []
    assert main([str(a) for a in [*argv, "--out", tmp / "clf2", "--no-progress"]]) == 2
    assert "name the GAN's classes" in capsys.readouterr().err

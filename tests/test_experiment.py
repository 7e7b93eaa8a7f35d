"""The experiment end to end on phantoms: every cell once, restart skips finished cells, failures reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.experiment.records import read_record
from pipelines.fidelity.distances import space_label

REPO = Path(__file__).resolve().parents[1]

TINY = """
gan:
  resolution: 32
  channels: [16, 16, 8, 8]
  latent_dim: 16
  kimg_per_phase: 0.04
  batch_per_resolution: {4: 8, 8: 8, 16: 8, 32: 8}
classify:
  model: cnn5
  epochs: 1
  batch_size: 64
compare:
  n_boot: 100
  synth_ratio: 1.0
"""


@pytest.fixture(scope="module")
def sweep(phantom_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    argv = [
        "compare",
        "--data",
        str(phantom_root),
        "--classes",
        "Fracture",
        "--fractions",
        "50",
        "100",
        "--arms",
        "none",
        "gan",
        "--seeds",
        "0",
        "--config",
        str(cfg),
        "--runs",
        str(tmp / "runs"),
        "--cache",
        str(tmp / "store"),
    ]
    code = main(argv)
    return tmp, argv, code


def out_dir(tmp):
    return tmp / "runs" / "phantoms" / "compare" / "sweep"


def test_sweep_writes_tables_report_and_every_cell_once(sweep):
    tmp, _, code = sweep
    assert code == 0
    cells = pd.read_csv(out_dir(tmp) / "cells.csv")
    assert len(cells) == 4 and (cells["status"] == "done").all()
    assert not cells.duplicated(["class", "fraction", "arm", "seed"]).any()
    table = pd.read_csv(out_dir(tmp) / "auc_table.csv")
    assert set(table["arm"]) == {"none", "gan"} and set(table["fraction"]) == {50, 100}
    assert table["auc"].between(0, 1).all()
    html = (out_dir(tmp) / "report.html").read_text()
    assert (
        "Sundaram" in html and "data:image/png;base64" in html and "Smoke test, not science" in html
    )
    # the GAN of each fraction was trained only on that fraction's train positives
    gan50 = pd.read_csv(tmp / "runs/phantoms/gan/sweep-Fracture-f50-seed0/positives.csv")
    gan100 = pd.read_csv(tmp / "runs/phantoms/gan/sweep-Fracture-f100-seed0/positives.csv")
    assert set(gan50["image_id"]) < set(gan100["image_id"])
    gan_run = tmp / "runs/phantoms/classify/sweep-cnn5-gan-f50-s0"
    metrics = json.loads((gan_run / "metrics.json").read_text())
    assert metrics["n_train_synthetic"] == len(gan50)  # synth ratio 1


def test_restart_skips_finished_and_redoes_only_the_unfinished(sweep):
    tmp, argv, _ = sweep
    runs = tmp / "runs/phantoms/classify"
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/predictions.csv")}
    victim = runs / "sweep-cnn5-none-f100-s0"
    (victim / "DONE").unlink()  # as if the sweep had been killed before this cell finished:
    (out_dir(tmp) / "cells" / "classify-none-f100-s0.json").unlink()  # its record comes last
    assert main(argv) == 0
    after = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/predictions.csv")}
    changed = {k for k in stamps if after[k] != stamps[k]}
    assert changed == {victim.name}
    cells = pd.read_csv(out_dir(tmp) / "cells.csv")
    assert len(cells) == 4 and (cells["status"] == "done").all()


def test_failed_cell_is_reported_not_dropped(sweep, capsys):
    tmp, argv, _ = sweep
    victim = tmp / "runs/phantoms/classify/sweep-cnn5-none-f50-s0"
    (victim / "DONE").unlink()
    (out_dir(tmp) / "cells" / "classify-none-f50-s0.json").unlink()
    (victim / "checkpoints" / "last.ckpt").write_bytes(b"damaged")
    assert main(argv) == 1
    cells = pd.read_csv(out_dir(tmp) / "cells.csv")
    failed = cells[cells["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["fraction"] == 50 and failed.iloc[0]["arm"] == "none"
    assert (victim / "ERROR").is_file()
    md = (out_dir(tmp) / "report.md").read_text()
    assert "failed" in md.lower()
    # collect-only mode reads the same state without training
    assert main([*argv, "--collect"]) == 1


@pytest.mark.parametrize(
    "flag, value, needle",
    [
        ("--arms", "nonsense", "unknown arm"),
        ("--classes", "Fractures", "unknown class"),
        ("--fractions", "0", "fraction"),
    ],
)
def test_bad_axes_refused_before_training(sweep, capsys, flag, value, needle):
    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    argv[argv.index("--runs") + 1] = str(tmp / "fresh")
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp / "fresh").exists()


def test_synth_only_arm_reports_the_gan_arms_gans_utility(sweep):
    """`--arms … synth_only` (train on synthetic, test on real): its classifier takes the gan arm's
    GAN samples as its only Fracture positives, and the report's GAN table and verdict give its
    Fracture AUC beside the none arm's."""
    from pipelines.experiment.plan import Sweep
    from pipelines.experiment.sweep import gan_quality

    tmp, argv, _ = sweep
    argv = list(argv)
    arms = ["none", "gan", "synth_only"]
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = arms
    assert main([*argv, "--name", "tstr"]) == 0
    results = tmp / "runs/phantoms/compare/tstr"
    cells = pd.read_csv(results / "cells.csv")
    assert (cells["status"] == "done").all() and set(cells["arm"]) == set(arms)
    fps = {
        arm: json.loads(
            (tmp / f"runs/phantoms/classify/tstr-cnn5-{arm}-f100-s0/fingerprint.json").read_text()
        )
        for arm in ("gan", "synth_only")
    }
    assert fps["synth_only"]["settings"]["synth"] == fps["gan"]["settings"]["synth"]  # the same GAN
    assert fps["synth_only"]["settings"]["train"] != fps["gan"]["settings"]["train"]  # no real ones
    auc = {
        arm: read_record(results / "cells", f"classify-{arm}-f100-s0")["metrics"]["auc"]["Fracture"]
        for arm in ("synth_only", "none")
    }
    plan = Sweep(["Fracture"], [100.0], arms, [0], tmp / "runs", "cnn5", "tstr")
    plan.results = results
    quality, _ = gan_quality(plan, "phantoms")
    assert quality["utility"].tolist() == [auc["synth_only"]["auc"]]
    assert quality["utility_real"].tolist() == [auc["none"]["auc"]]
    md = (results / "report.md").read_text()
    assert "TSTR AUC (real)" in md
    assert f"{auc['synth_only']['auc']:.3f} ({auc['none']['auc']:.3f})" in md
    assert "as its only Fracture positives (synth_only" in md


def test_conditional_gan_sweep_trains_one_gan_for_all_classes(sweep):
    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index("--classes") + 1 : argv.index("--fractions")] = ["Fracture", "Lung Lesion"]
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = ["gan"]
    argv += ["--set", "compare.conditional_gan=true", "--name", "cond"]
    assert main(argv) == 0
    gans = sorted(p.name for p in (tmp / "runs/phantoms/gan").glob("cond-*"))
    assert gans == ["cond-Fracture+Lung_Lesion-f100-seed0"]  # one GAN, not one per class
    gan = tmp / "runs/phantoms/gan" / gans[0]
    assert json.loads((gan / "summary.json").read_text())["classes"] == ["Fracture", "Lung Lesion"]
    positives = pd.read_csv(gan / "positives.csv")
    metrics = json.loads(
        (tmp / "runs/phantoms/classify/cond-cnn5-gan-f100-s0/metrics.json").read_text()
    )
    assert metrics["n_train_synthetic"] == len(positives)  # synth ratio 1 over the union
    table = pd.read_csv(tmp / "runs/phantoms/compare/cond/auc_table.csv")
    assert set(table["class"]) == {"Fracture", "Lung Lesion"}


def test_condition_on_learns_another_class_and_synthesizes_only_the_studied_one(sweep, capsys):
    """compare.condition_on: one label-conditional GAN on Fracture and Lung Lesion per seed; only
    Fracture images join the classifier; the report's fidelity row is Fracture's own."""
    from pipelines.experiment.plan import Sweep
    from pipelines.experiment.sweep import gan_quality

    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv += ["--name", "condon"]
    for bad, needle in ((["Fracture"], "a class the GAN is for"), (["Nodule"], "'Nodule'")):
        assert main([*argv, "--set", f"compare.condition_on=[{bad[0]}]"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert main([*argv, "--set", "compare.condition_on=[Lung Lesion]"]) == 0
    gan = tmp / "runs/phantoms/gan/condon-Fracture+Lung_Lesion-f100-seed0"
    summary = json.loads((gan / "summary.json").read_text())
    assert summary["classes"] == ["Fracture", "Lung Lesion"] and summary["conditional"]
    positives = pd.read_csv(gan / "positives.csv")
    fracture = int((positives["Fracture"] > 0.5).sum())
    assert 0 < fracture < len(positives)  # it learned Lung Lesion images too
    results = tmp / "runs/phantoms/compare/condon"
    record = read_record(results / "cells", "gan-Fracture+Lung_Lesion-f100-s0")
    rows = pd.read_csv(gan / record["synthetic"] / "synthetic.csv")
    assert len(rows) == fracture  # synth ratio 1 over the studied class only
    assert (rows["Fracture"] == 1).all()  # conditioned on a drawn Fracture positive's labels
    drawn = positives.set_index("image_id").loc[rows["label_source_image_id"], "Lung Lesion"]
    assert (rows["Lung Lesion"].to_numpy() == (drawn.to_numpy() > 0.5)).all()
    metrics = json.loads(
        (tmp / "runs/phantoms/classify/condon-cnn5-gan-f100-s0/metrics.json").read_text()
    )
    assert metrics["n_train_synthetic"] == fracture
    per_class = record["eval"]["per_class"]
    assert set(per_class) == {"Fracture", "Lung Lesion"}
    plan = Sweep(["Fracture"], [100.0], ["none", "gan"], [0], tmp / "runs", "cnn5", "condon")
    plan.results, plan.condition_on = results, ("Lung Lesion",)
    quality, _ = gan_quality(plan, "phantoms")
    assert list(quality["class"]) == ["Fracture, by the GAN on Fracture + Lung Lesion"]
    assert list(quality["studied"]) == ["Fracture"] and quality["filter_bank"].all()
    c2st = (per_class["Fracture"]["c2st"] or {}).get("auc", np.nan)
    assert np.isclose(quality["c2st"].iloc[0], c2st, equal_nan=True)


def test_what_a_cell_trained_with_is_what_its_record_holds(sweep):
    """One function (plan.cell_config) makes the config a cell trains with and the one its record
    holds and is checked against: the run folders' config.yaml and the records agree."""
    import yaml

    tmp, _, _ = sweep
    cells = out_dir(tmp) / "cells"
    for cell_id, run, sections in [
        ("gan-Fracture-f50-s0", "gan/sweep-Fracture-f50-seed0", ("gan", "filters", "data")),
        (
            "classify-gan-f100-s0",
            "classify/sweep-cnn5-gan-f100-s0",
            ("classify", "data", "compare"),
        ),
    ]:
        trained = yaml.safe_load((tmp / "runs/phantoms" / run / "config.yaml").read_text())
        recorded = read_record(cells, cell_id)["settings"]["config"]
        for section in sections:  # (a record is JSON: its keys are text)
            as_json = json.loads(json.dumps(trained[section], default=str))
            assert as_json == recorded[section], (cell_id, section)
        assert (recorded["gan"] if "gan" in recorded else recorded["classify"])["seed"] == 0


def test_same_name_with_other_settings_is_refused_never_mixed(sweep, capsys):
    tmp, argv, _ = sweep
    table = out_dir(tmp) / "auc_table.csv"
    before = table.read_bytes()
    assert main([*argv, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "classify.epochs: 1 → 2" in err and "--redo" in err and "--name" in err
    assert table.read_bytes() == before, "a refused sweep must not rewrite the table"
    # --redo replaces the runs made by other settings, and only those of this sweep's cells
    argv = list(argv)
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = ["none"]
    assert main([*argv, "--epochs", "2", "--redo", "--name", "sweep"]) == 0
    run = tmp / "runs/phantoms/classify/sweep-cnn5-none-f100-s0"
    assert json.loads((run / "fingerprint.json").read_text())["settings"]["classify.epochs"] == 2


def test_one_gan_per_seed_and_a_failing_evaluation_fails_only_its_cells(sweep, monkeypatch):
    import torch

    from pipelines.experiment import execute as execute_module

    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = ["gan"]
    argv[argv.index("--seeds") + 1 : argv.index("--config")] = ["0", "1"]
    real_eval = execute_module.evaluate_gan_run
    spaces = []

    def flaky_eval(gdir, synth, seed=0, **kw):
        spaces.append(kw.get("classifier"))
        if seed == 1:
            raise RuntimeError("evaluation blew up")
        return real_eval(gdir, synth, seed=seed, **kw)

    monkeypatch.setattr(execute_module, "evaluate_gan_run", flaky_eval)
    assert main([*argv, "--name", "seeds"]) == 1  # a failed cell is reported, not raised
    gans = tmp / "runs/phantoms/gan"
    g0, g1 = (torch.load(gans / f"seeds-Fracture-f100-seed{s}/generator_ema.pt") for s in (0, 1))
    assert any(not torch.equal(g0["state_dict"][k], g1["state_dict"][k]) for k in g0["state_dict"])
    assert "evaluation blew up" in (gans / "seeds-Fracture-f100-seed1" / "ERROR").read_text()
    cells = pd.read_csv(tmp / "runs/phantoms/compare/seeds/cells.csv").set_index("seed")
    assert cells.loc[0, "status"] == "done" and cells.loc[1, "status"] == "failed"
    assert spaces == [None, None], "no `none` arm: the random-feature fallback"
    gan = read_record(tmp / "runs/phantoms/compare/seeds/cells", "gan-Fracture-f100-s0")
    assert gan["needs"] == [] and space_label(gan["eval"]["feature_space"]) == "random-feature"


def test_every_arm_in_one_sweep_with_equal_steps_and_both_gan_variants(sweep):
    """filters, gan_nofilter, gan and gan_standard beside none and standard, paired on seed 0."""
    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    arms = ["none", "standard", "filters", "gan_nofilter", "gan", "gan_standard"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = arms
    assert main([*argv, "--name", "arms"]) == 0
    gans = tmp / "runs/phantoms/gan"
    filtered = json.loads((gans / "arms-Fracture-f100-seed0/summary.json").read_text())
    plain = json.loads((gans / "arms-Fracture-f100-seed0-nofilter/summary.json").read_text())
    assert filtered["training_images"] == 4 * filtered["positives"]  # original + 3 filters
    assert plain["training_images"] == plain["positives"]  # originals only
    metrics = {
        a: json.loads(
            (tmp / f"runs/phantoms/classify/arms-cnn5-{a}-f100-s0/metrics.json").read_text()
        )
        for a in arms
    }
    assert len({m["optimizer_steps"] for m in metrics.values()}) == 1, "equal optimizer steps"
    assert metrics["gan_standard"]["n_train_synthetic"] == metrics["gan"]["n_train_synthetic"] > 0
    table = pd.read_csv(tmp / "runs/phantoms/compare/arms/auc_table.csv")
    assert set(table["arm"]) == set(arms)
    gan = table[table["arm"] == "gan"].iloc[0]
    assert gan["ref2"] == "gan_nofilter" and np.isfinite(gan["delta2"])
    md = (tmp / "runs/phantoms/compare/arms/auc_table.md").read_text()
    assert "Δ gan − gan_nofilter" in md and "Δ gan_standard − standard" in md


def test_collect_refuses_cells_made_by_other_settings(sweep, capsys):
    """--collect rebuilds tables from finished cells only when they match this sweep's settings."""
    tmp, argv, _ = sweep
    argv = list(argv)
    argv[argv.index("--fractions") + 1 : argv.index("--arms")] = ["100"]
    argv[argv.index("--arms") + 1 : argv.index("--seeds")] = ["none"]
    assert main([*argv, "--name", "collect", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--name", "collect", "--epochs", "1", "--collect"]) == 0
    assert main([*argv, "--name", "collect", "--epochs", "2", "--collect"]) == 2
    assert "classify.epochs: 1 → 2" in capsys.readouterr().err


def test_ordinal_sweep_reports_kappa_beside_the_auc(sweep, shared_data, tmp_path):
    """Real knee images of every KL grade: the compare report adds the kappa table, each arm's
    kappa the mean of its cells' own (the classify run's qwk); a multilabel sweep has none."""
    import shutil

    root = tmp_path / "knee"
    for grade in "01234":
        (root / grade).mkdir(parents=True)
        for f in sorted((shared_data / "knee_kl" / "train" / grade).glob("*.png"))[:12]:
            shutil.copy(f, root / grade / f.name)
    tmp, argv, _ = sweep
    where = ["--runs", str(tmp_path / "runs"), "--cache", str(tmp_path / "store")]
    over = ["--data", str(root), "--classes", "4", "--fractions", "100", "--arms", "none"]
    over += ["standard", "--seeds", "0", "1", "--name", "knee", "--val", "0.2", "--test", "0.3"]
    assert main([*argv[:1], *over, "--config", argv[argv.index("--config") + 1], *where]) == 0
    out = tmp_path / "runs" / "knee" / "compare" / "knee"
    table = pd.read_csv(out / "qwk_table.csv").set_index("arm")
    assert list(table.index) == ["none", "standard"] and (table["n_seeds"] == 2).all()
    for arm in table.index:
        own = [
            read_record(out / "cells", f"classify-{arm}-f100-s{s}")["metrics"]["qwk"]
            for s in (0, 1)
        ]
        assert table.loc[arm, "qwk"] == pytest.approx(np.mean(own))
    assert "quadratic weighted kappa" in (out / "report.html").read_text()
    assert not (out_dir(tmp) / "qwk_table.csv").exists()

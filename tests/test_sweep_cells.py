"""A sweep run piecewise on phantoms: cells listed and run one at a time, records collected
without the runs, stale records refused, two processes on two cells of one sweep."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_experiment import REPO, TINY

from pipelines.cli import main
from pipelines.experiment.records import code_version, read_record, remove_record
from pipelines.experiment.stats import auc_table
from pipelines.experiment.tables import write_tables
from pipelines.fidelity.distances import space_label
from pipelines.fidelity.eval_run import eval_current
from pipelines.fingerprints import file_sha256
from pipelines.runs import file_lock


def tiny_argv(phantom_root, tmp, name, arms, *extra):
    """`raregan compare` on the phantoms: Fracture, 100 %, seed 0, the given arms, tiny config."""
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    return [
        *["compare", "--data", str(phantom_root), "--classes", "Fracture", "--fractions", "100"],
        *["--arms", *arms, "--seeds", "0", "--config", str(cfg), "--name", name],
        *["--runs", str(tmp / "runs"), "--cache", str(tmp / "store"), *extra],
    ]


def main_output(argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the CLI (in this process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def piecewise(phantom_root, tmp_path_factory):
    """A sweep (none and gan at 100 %, seed 0) run one cell at a time, then as a whole."""
    tmp = tmp_path_factory.mktemp("piecewise")
    argv = tiny_argv(phantom_root, tmp, "cells", ["none", "gan"])
    steps = {"list before": main_output([*argv, "--list-cells"])}
    steps["gan cell first"] = main_output([*argv, "--cell", "1"])
    steps["gan classifier first"] = main_output([*argv, "--cell", "2"])
    steps["out of range"] = main_output([*argv, "--cell", "3"])
    with file_lock(tmp / "runs/phantoms/compare/cells/locks/classify-none-f100-s0.lock"):
        steps["busy"] = main_output([*argv, "--cell", "0"])  # as if another process ran it
    for which in ("0", "gan-Fracture-f100-s0", "2"):
        steps[which] = main_output([*argv, "--cell", which])
    steps["list after"] = main_output([*argv, "--list-cells"])
    runs = tmp / "runs/phantoms"
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/cells-*/*") if p.is_file()}
    steps["tables before whole"] = (tmp / "runs/phantoms/compare/cells/auc_table.csv").exists()
    steps["whole"] = main_output(argv)
    steps["changed"] = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    # the records as the sweep left them, before any test changes them
    shutil.copytree(tmp / "runs/phantoms/compare/cells/cells", tmp / "records-as-made")
    return tmp, argv, steps


def test_cells_listed_and_run_one_at_a_time(piecewise):
    """--list-cells numbers the `none` classifier, then the GAN unit that is evaluated in its
    features, then the GAN classifier; --cell K refuses a cell whose needed cell is not done."""
    tmp, _, steps = piecewise
    code, out, _ = steps["list before"]
    head, *rows = [line.split() for line in out.splitlines()]
    assert code == 0 and head == ["#", "K", "status", "cell", "needs"]
    assert rows == [
        ["0", "pending", "classify-none-f100-s0", "-"],
        ["1", "pending", "gan-Fracture-f100-s0", "0"],
        ["2", "pending", "classify-gan-f100-s0", "1"],
    ]
    code, _, err = steps["gan cell first"]
    need = "cell 1 (gan-Fracture-f100-s0) needs classifier cell 0 (classify-none-f100-s0)"
    assert code == 2 and f"{need}, which is not done; run --cell 0 first" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = steps["gan classifier first"]
    assert code == 2 and "needs GAN unit 1 (gan-Fracture-f100-s0), which is not done" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = steps["out of range"]
    assert code == 2 and "no cell '3': this sweep has cells 0 to 2" in err
    code, _, err = steps["busy"]
    assert code == 2 and "cell 0 (classify-none-f100-s0) is being run by another process" in err
    assert [steps[w][0] for w in ("0", "gan-Fracture-f100-s0", "2")] == [0, 0, 0]
    assert "cell 1 (gan-Fracture-f100-s0): done" in steps["gan-Fracture-f100-s0"][1]
    code, out, _ = steps["list after"]
    assert [line.split()[1] for line in out.splitlines()[-3:]] == ["done"] * 3
    assert not steps["tables before whole"], "--cell writes its record, not the tables"
    code, out, _ = steps["whole"]
    assert code == 0 and "'done': 2" in out
    assert steps["changed"] == [], "the whole sweep found every cell done and ran none again"
    cells = tmp / "runs/phantoms/compare/cells/cells"
    gan = read_record(cells, "gan-Fracture-f100-s0")
    assert {"fid", "kid"} <= set(gan["eval"]) and gan["settings"]["classes"] == ["Fracture"]
    # measured in the domain features of the `none` classifier it needs, not random features
    assert gan["needs"] == ["classify-none-f100-s0"]
    assert gan["eval"]["feature_space"] == "classifier:cnn5"
    assert space_label(gan["eval"]["feature_space"]) == "classifier-feature"
    none_ckpt = tmp / "runs/phantoms/classify/cells-cnn5-none-f100-s0/checkpoints/best.ckpt"
    assert gan["eval"]["feature_classifier"]["sha256"] == file_sha256(none_ckpt)
    assert sorted(gan["files"]) == ["-closest_pairs.png", "-real_vs_synthetic.png"]
    clf = read_record(cells, "classify-gan-f100-s0")
    assert clf["needs"] == ["gan-Fracture-f100-s0"] and clf["settings"]["arm"] == "gan"
    assert clf["fingerprint"]["settings"]["classify.epochs"] == 1
    assert clf["metrics"]["n_train_synthetic"] > 0


def test_collect_rebuilds_identical_tables_from_records_alone(piecewise, tmp_path):
    """With every run folder deleted, --collect writes the same tables and report as the sweep;
    the records also collect from a copy elsewhere (--results), and a tampered one is refused."""
    tmp, argv, _ = piecewise
    out = tmp / "runs/phantoms/compare/cells"
    names = ["auc_table.csv", "auc_table.md", "cells.csv", "report.md"]
    before = {n: (out / n).read_bytes() for n in names}
    # the old way, straight from the run folders, gives the same table as the records
    cells = pd.read_csv(out / "cells.csv").drop(columns="predictions")
    table = auc_table(cells, n_boot=100, seed=0, paper=True)
    assert write_tables(table, tmp_path / "from-runs")["csv"].read_bytes() == before[names[0]]
    for stage in ("classify", "gan"):
        for run in (tmp / "runs/phantoms" / stage).glob("cells-*"):
            shutil.rmtree(run)
    assert main([*argv, "--collect"]) == 0
    assert {n: (out / n).read_bytes() for n in names} == before
    report = before["report.md"].decode()
    assert "real train positives (top) vs GAN samples" in report
    code = code_version()
    assert f"Code that made the records: {code} (" in report  # provenance, from the records
    assert "Precision of the classifiers: " in report and "Precision of the GANs: " in report
    assert len(list((out / "images").glob("*.png"))) == 2
    elsewhere = tmp_path / "results"
    shutil.copytree(out / "cells", elsewhere / "cells")
    assert main([*argv, "--collect", "--results", str(elsewhere)]) == 0
    assert (elsewhere / "auc_table.csv").read_bytes() == before["auc_table.csv"]
    gz = elsewhere / "cells" / "classify-none-f100-s0.csv.gz"
    gz.write_bytes(gz.read_bytes()[:-4])
    code, _, err = main_output([*argv, "--collect", "--results", str(elsewhere)])
    assert code == 2 and "classify-none-f100-s0.csv.gz: missing or not the file" in err
    code, _, err = main_output([*argv, "--collect", "--results", str(tmp_path / "empty")])
    assert code == 2 and "no cell records in" in err


def test_gan_records_of_the_other_precision_are_stale_unless_the_sweep_says_auto(
    piecewise, tmp_path
):
    """gan.precision 32 (the default) or bf16 is a setting: a GAN record of the other precision is
    refused, naming the key. `auto` is the machine's: a record made where it resolved to bf16
    collects on an fp32 machine and the other way round."""
    tmp, argv, _ = piecewise
    elsewhere = tmp_path / "results"
    shutil.copytree(tmp / "runs/phantoms/compare/cells/cells", elsewhere / "cells")
    path = elsewhere / "cells" / "gan-Fracture-f100-s0.json"
    record = json.loads(path.read_text())
    config = argv[argv.index("--config") + 1]
    auto = tmp_path / "auto.yaml"
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["gan"]["precision"] = "auto"
    auto.write_text(yaml.safe_dump(cfg))
    argv_auto = [str(auto) if a == config else a for a in argv]
    for made_in in ("bf16", None):  # as made on a bf16 CPU or GPU, then on an fp32 machine
        settings = record["fingerprint"]["settings"]
        settings.pop("gan.precision", None)
        settings.update({"gan.precision": made_in} if made_in else {})
        path.write_text(json.dumps(record))
        code, _, err = main_output([*argv_auto, "--collect", "--results", str(elsewhere)])
        assert code == 0, f"{made_in}: {err}"
        assert (elsewhere / "auc_table.csv").is_file()
        code, _, err = main_output([*argv, "--collect", "--results", str(elsewhere)])
        if made_in:
            assert code == 2 and "gan.precision" in err, err
        else:
            assert code == 0, err


def test_gan_unit_refused_without_its_classifier_checkpoint(piecewise):
    """A GAN unit whose `none` classifier has a record here but not its run folder's checkpoint is
    refused with one line saying what to do (no training)."""
    tmp, argv, _ = piecewise
    ckpt = tmp / "runs/phantoms/classify/cells-cnn5-none-f100-s0/checkpoints/best.ckpt"
    ckpt.unlink(missing_ok=True)  # as on a machine the classifier's run folder was not copied to
    remove_record(tmp / "runs/phantoms/compare/cells/cells", "gan-Fracture-f100-s0")
    code, _, err = main_output([*argv, "--cell", "1"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"its checkpoint {ckpt} is not; copy its run folder here" in err
    assert "classify-none-f100-s0.json and run --cell 0 again" in err


def test_sweep_without_none_arm_plans_gan_units_on_random_features(piecewise, phantom_root):
    """Without a `none` arm the GAN units need no cell (their evaluation falls back to random
    features); the classifiers of the other arms still come first."""
    argv = tiny_argv(phantom_root, piecewise[0], "nonone", ["standard", "gan"])  # its store
    code, out, _ = main_output([*argv, "--list-cells"])
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and rows == [
        ["0", "pending", "classify-standard-f100-s0", "-"],
        ["1", "pending", "gan-Fracture-f100-s0", "-"],
        ["2", "pending", "classify-gan-f100-s0", "1"],
    ]


def test_gan_eval_reused_only_in_the_feature_space_asked_for(tmp_path):
    """A GAN's eval.json is current for random features when it was made in them, and for a
    classifier only when it was made with that very checkpoint (by content, not file time)."""
    path, ckpt = tmp_path / "eval.json", tmp_path / "best.ckpt"
    assert not eval_current(path, None)
    path.write_text(json.dumps({"feature_space": "random-conv(size=32, seed=0, dim=256)"}))
    ckpt.write_bytes(b"weights")
    assert eval_current(path, None) and not eval_current(path, ckpt)
    made = {"path": str(ckpt), "sha256": file_sha256(ckpt)}
    path.write_text(json.dumps({"feature_space": "classifier:cnn5", "feature_classifier": made}))
    assert eval_current(path, ckpt) and not eval_current(path, None)
    os.utime(path, ns=(1, 1))  # a copied folder's file times say nothing
    assert eval_current(path, ckpt)
    ckpt.write_bytes(b"weights trained again")
    assert not eval_current(path, ckpt)


def test_two_processes_run_two_cells_of_one_sweep_at_once(phantom_root, tmp_path):
    """Two CLI processes, one cell each, one fresh store between them: both records, one table."""
    argv = tiny_argv(phantom_root, tmp_path, "pair", ["none", "standard"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipelines", *argv, "--cell", str(k)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in results]
    folder = tmp_path / "runs/phantoms/compare/pair/cells"
    for arm in ("none", "standard"):
        record = read_record(folder, f"classify-{arm}-f100-s0")
        assert record["settings"]["arm"] == arm and record["metrics"]["arm"] == arm
    store = sorted(p.suffix for p in (tmp_path / "store").iterdir())
    assert store == [".json", ".u8"], "one store, no temp or lock file left"
    assert main([*argv, "--collect"]) == 0
    table = pd.read_csv(tmp_path / "runs/phantoms/compare/pair/auc_table.csv")
    assert sorted(table["arm"]) == ["none", "standard"]
    assert (table["n_seeds"] == 1).all() and table["auc"].between(0, 1).all()


def test_transfer_from_trains_a_source_per_fraction_and_seed_that_each_gan_fine_tunes(
    phantom_root, tmp_path
):
    """compare.transfer_from: the GAN of other classes' images pooled is a cell of its own per fraction
    and seed (no filter bank, no labels); the GAN unit needs it, starts from its weights and trains only the final phase
    for compare.transfer_kimg; the records alone collect (the source named by its record), a
    changed fine-tune length makes them stale, and bad uses are one line each."""
    argv = tiny_argv(phantom_root, tmp_path, "transfer", ["none", "gan"])
    source_set = "compare.transfer_from=[Lung Lesion,Pleural Other]"
    argv += ["--set", source_set, "--set", "compare.transfer_kimg=0.05"]
    code, out, _ = main_output([*argv, "--list-cells"])
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and rows == [
        ["0", "pending", "classify-none-f100-s0", "-"],
        ["1", "pending", "source-Lung_Lesion+Pleural_Other-f100-s0", "-"],
        ["2", "pending", "gan-Fracture-f100-s0", "0,1"],
        ["3", "pending", "classify-gan-f100-s0", "2"],
    ]
    main_output([*argv, "--cell", "0"])
    code, _, err = main_output([*argv, "--cell", "2"])
    assert (
        code == 2
        and "needs source GAN 1 (source-Lung_Lesion+Pleural_Other-f100-s0), which is not done"
        in err
    )
    code, out, err = main_output(argv)
    assert code == 0, err
    gans = tmp_path / "runs/phantoms/gan"
    source, unit = (
        gans / "transfer-Lung_Lesion+Pleural_Other-f100-seed0-source",
        gans / "transfer-Fracture-f100-seed0",
    )
    source_summary = json.loads((source / "summary.json").read_text())
    assert "init_from" not in source_summary and not source_summary["conditional"]
    assert source_summary["classes"] == ["Lung Lesion", "Pleural Other"]  # pooled, no labels
    assert source_summary["training_images"] == source_summary["positives"]  # no filter bank
    summary = json.loads((unit / "summary.json").read_text())
    assert summary["init_from"] == str(source) and summary["kimg"] == pytest.approx(0.05, abs=0.01)
    assert (pd.read_csv(unit / "losses.csv")["level"] == 3).all()  # only the 32 px phase
    settings = json.loads((unit / "fingerprint.json").read_text())["settings"]
    assert settings["gan.init_from"] == json.loads((source / "fingerprint.json").read_text())["id"]
    cells = tmp_path / "runs/phantoms/compare/transfer/cells"
    assert read_record(cells, "gan-Fracture-f100-s0")["needs"] == [
        "classify-none-f100-s0",
        "source-Lung_Lesion+Pleural_Other-f100-s0",
    ]
    assert (
        "fine-tuned from a Lung Lesion + Pleural Other GAN"
        in (cells.parent / "report.md").read_text()
    )

    # one finished GAN for every fraction (gan.init_from) must be of the smallest: refused up front
    config = Path(argv[argv.index("--config") + 1])
    fixed = tmp_path / "init-from.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["gan"]["init_from"] = str(source)
    fixed.write_text(yaml.safe_dump(settings))
    one = [str(fixed) if a == str(config) else a for a in argv[: argv.index(source_set) - 1]]
    one[one.index("--fractions") + 1 : one.index("--fractions") + 2] = ["50", "100"]
    code, _, err = main_output([*one, "--list-cells"])
    assert code == 2 and "training image(s) outside the 50 % fraction" in err, err
    code, _, err = main_output(
        [*one, "--set", "compare.transfer_from=[Lung Lesion]", "--list-cells"]
    )
    assert (
        code == 2 and "gan.init_from (one run for every fraction) or compare.transfer_from" in err
    )

    shutil.rmtree(tmp_path / "runs/phantoms/gan")  # records alone: the source named by its record
    shutil.rmtree(tmp_path / "runs/phantoms/classify")
    assert main_output([*argv, "--collect"])[0] == 0
    longer = [*argv[:-1], "compare.transfer_kimg=0.1"]
    code, _, err = main_output([*longer, "--collect"])
    assert code == 2 and "gan.final_kimg" in err
    remove_record(cells, "source-Lung_Lesion+Pleural_Other-f100-s0")  # the unit's source: gone
    code, _, err = main_output([*argv, "--collect"])
    assert code == 2 and "the record of the source GAN it fine-tuned" in err
    assert "run --cell source-Lung_Lesion+Pleural_Other-f100-s0" in err
    # a class named twice is one class; the old flag still works for one release, with a note
    twice = ["--transfer-from", "Lung Lesion", "Pleural Other", "Lung Lesion", "--list-cells"]
    code, out, err = main_output([*argv, *twice])
    assert code == 0 and "source-Lung_Lesion+Pleural_Other-f100-s0" in out
    note = (
        "--transfer-from is now --set compare.transfer_from=[Lung Lesion,Pleural Other,Lung Lesion]"
    )
    assert note in err

    for extra, needle in [
        (["--set", "compare.transfer_from=[Fracture]"], "'Fracture', a class the sweep studies"),
        (
            ["--set", "compare.transfer_from=[Nope]"],
            "unknown class 'Nope' in compare.transfer_from",
        ),
        (["--set", "compare.condition_on=[Pleural Other]"], "label-conditional GANs"),
    ]:
        code, _, err = main_output([*argv, *extra, "--list-cells"])
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_gan_trained_again_makes_the_classifiers_on_its_images_stale(piecewise, tmp_path):
    """A classifier record names the GAN records its synthetic images came from (by content): a GAN
    whose record was replaced since (another training, same settings) is refused by name."""
    tmp, argv, _ = piecewise
    results = tmp_path / "results"
    shutil.copytree(tmp / "records-as-made", results / "cells")
    code, _, err = main_output([*argv, "--collect", "--results", str(results)])
    assert code == 0, err
    record = read_record(results / "cells", "classify-gan-f100-s0")
    assert set(record["made_from"]) == {"gan-Fracture-f100-s0"}
    path = results / "cells" / "gan-Fracture-f100-s0.json"
    gan = json.loads(path.read_text())
    gan["summary"]["train_seconds_again"] = 1.0  # what a second training's record would differ in
    path.write_text(json.dumps(gan))
    code, _, err = main_output([*argv, "--collect", "--results", str(results)])
    assert code == 2 and "classify-gan-f100-s0" in err
    assert "(gan-Fracture-f100-s0) was trained again" in err

"""`raregan evaluate`: a finished classifier run scored on external data sets, and what it refuses."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import classify_cnn5 as classify

from pipelines.cli import main


def evaluate_cli(run, data, cache, *extra) -> int:
    """`raregan evaluate` of a run on a data folder."""
    argv = ["evaluate", "--run", str(run), "--data", str(data), "--cache", str(cache)]
    return main([*argv, *extra])


def test_evaluate_refuses_a_different_label_space(shared_data, phantom_root, tmp_path, capsys):
    out = tmp_path / "p"
    assert classify(tmp_path, phantom_root, out, "--size", "32", "--epochs", "1") == 0
    code = main(
        [
            "evaluate",
            "--run",
            str(out),
            "--data",
            str(shared_data / "chest_xray"),
            "--cache",
            str(tmp_path / "store"),
        ]
    )
    assert code == 2 and "lacks labels" in capsys.readouterr().err


def test_evaluate_refuses_the_runs_own_train_and_val_images(
    phantom_run, phantom_root, tmp_path, capsys
):
    code = evaluate_cli(phantom_run, phantom_root, tmp_path / "store")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("raregan: error:"), err
    assert "pixel-identical to the run's train/val images" in err
    assert "train/val patients of the run" in err and "--allow-overlap" in err
    assert not list(phantom_run.glob("external-*"))


def test_evaluate_one_folder_per_data_set_rounded_aucs_calibration(phantom_run, tmp_path, capsys):
    """Two external sets in folders of the same name get two output folders; AUCs print as
    `classify` prints them, with ECE, Brier and sensitivity / specificity at the val thresholds."""
    from pipelines.data.phantoms import write_phantoms

    sets = [write_phantoms(tmp_path / side / "ext", n=60, size=32, seed=5) for side in "ab"]
    for data in sets:
        assert evaluate_cli(phantom_run, data, tmp_path / "store", "--allow-overlap") == 0
        out, err = capsys.readouterr()
        assert "patients are train/val patients of the run" in err and "no external test" in err
        assert re.search(r"\n  macro\s+0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]\n", out), out
        assert re.search(r"\n  Fracture\s+ECE 0\.\d{3}, Brier 0\.\d{3}\n", out), out
        assert "sensitivity" in out and "10 equal-width bins" in out
        assert not re.search(r"\d\.\d{5,}", out), "unrounded numbers printed"
    folders = sorted(phantom_run.glob("external-phantoms-*"))
    assert len(folders) == 2, folders
    for folder in folders:
        ext = json.loads((folder / "metrics.json").read_text())
        assert ext["overlap"] == {
            "checked": True,
            "images": 0,
            "patients": ext["overlap"]["patients"],
            "near_copies": ext["overlap"]["near_copies"],  # phantoms look alike: some are
        }
        assert ext["overlap"]["patients"] > 0
        assert set(ext["calibration"]["per_label"]) >= {"Fracture", "Lung Lesion"}
        run_t = json.loads((phantom_run / "metrics.json").read_text())["thresholds"]["per_label"]
        for name, t in ext["thresholds"]["per_label"].items():
            assert t["threshold"] == run_t[name]["threshold"]  # the run's val thresholds
        for name in ("calibration.png", "roc_curves.png", "DONE"):
            assert (folder / name).is_file(), name
    other = {json.loads((f / "metrics.json").read_text())["external_data"] for f in folders}
    assert other == {str(s) for s in sets}


def test_evaluate_an_older_run_warns_and_goes_on(phantom_run, tmp_path, capsys):
    from pipelines.data.phantoms import write_phantoms

    old = tmp_path / "old"
    shutil.copytree(
        phantom_run, old, ignore=shutil.ignore_patterns("train_val_ids.csv", "external-*")
    )
    metrics = json.loads((old / "metrics.json").read_text())
    metrics.pop("thresholds")
    (old / "metrics.json").write_text(json.dumps(metrics))
    data = write_phantoms(tmp_path / "ext", n=60, size=32, seed=6)
    assert evaluate_cli(old, data, tmp_path / "store") == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert any("no train_val_ids.csv" in ln and ln.startswith("raregan: warning:") for ln in err)
    assert any("no val thresholds" in ln for ln in err)
    (folder,) = old.glob("external-phantoms-*")
    ext = json.loads((folder / "metrics.json").read_text())
    assert ext["overlap"] == {"checked": False} and "thresholds" not in ext


def test_evaluate_help_lists_only_the_options_that_apply(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for flag in ("--run", "--data", "--format", "--all-views", "--label-map", "--allow-overlap"):
        assert flag in out, flag
    for flag in (
        "--uncertainty",
        "--rarefy",
        "--val",
        "--test",
        "--seed",
        "--resplit",
        "--size",
        "--allow-duplicates",
    ):
        assert not re.search(rf"{flag}\b", out), flag


def test_evaluate_refuses_re_saved_copies_of_the_training_images_under_new_patient_ids(
    phantom_run, phantom_root, tmp_path, capsys
):
    """JPEG re-saves of the run's own training images under renamed patients are no external set."""
    import pandas as pd
    from PIL import Image

    seen = pd.read_csv(phantom_run / "train_val_ids.csv", dtype=str)
    train = pd.read_csv(phantom_root / "train.csv")
    train = train[train["Path"].isin(seen["image_id"])].head(30).reset_index(drop=True)
    root = tmp_path / "ext" / phantom_root.name
    renamed = []
    for k, rel in enumerate(train["Path"]):
        new = f"{phantom_root.name}/train/patient{90000 + k:05d}/study1/view1_frontal.jpg"
        (tmp_path / "ext" / new).parent.mkdir(parents=True)
        with Image.open(phantom_root.parent / rel) as im:
            im.convert("L").save(tmp_path / "ext" / new, quality=70)
        renamed.append(new)
    train["Path"] = renamed
    train.to_csv(root / "train.csv", index=False)
    code = evaluate_cli(phantom_run, root, tmp_path / "store")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "near-copies" in err and "of the run's train/val images" in err
    assert "train/val patients of the run" not in err

"""Classifier runs end to end on real data and phantoms: metrics, outputs, resume, DDP, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import classify_cnn5 as classify

from pipelines.classifier.arms import assert_no_synthetic
from pipelines.cli import main
from pipelines.errors import RareganError


def test_kermany_three_class_learns_well_above_chance(shared_data, tmp_path, capsys):
    """Kermany normal/bacterial/viral (Kermany et al. 2018), 32 px, a quarter of the train patients."""
    out = tmp_path / "k"
    assert (
        classify(
            tmp_path,
            shared_data / "chest_xray",
            out,
            "--size",
            "32",
            "--fraction",
            "25",
            "--classes",
            "viral",
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc"]["macro"]["auc"] > 0.85
    assert (
        metrics["auc"]["normal"]["lo"]
        < metrics["auc"]["normal"]["auc"]
        < metrics["auc"]["normal"]["hi"]
    )
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == metrics["n_test"] and {"viral", "score:viral", "patient"} <= set(
        preds.columns
    )
    assert np.allclose(
        preds[["score:normal", "score:bacterial", "score:viral"]].sum(axis=1), 1, atol=1e-4
    )
    for name in (
        "roc_curves.png",
        "confusion.png",
        "label_distribution.png",
        "test_predictions.png",
        "gradcam_viral.png",
        "checkpoints/best.ckpt",
        "DONE",
    ):
        assert (out / name).is_file(), name
    assert "viral" in capsys.readouterr().out


def test_phantom_multilabel_and_external_evaluation(phantom_root, tmp_path, capsys):
    from pipelines.data.phantoms import write_phantoms

    out = tmp_path / "p"
    assert classify(tmp_path, phantom_root, out, "--size", "32", "--classes", "Fracture") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["auc"]) >= {"Fracture", "Lung Lesion", "macro", "micro"}
    for label, m in metrics["auc"].items():  # undefined AUCs say why; they are never 0.5 stand-ins
        assert (m["auc"] is None) == (m["reason"] is not None), label
    other = write_phantoms(tmp_path / "other", n=120, size=64, seed=5)
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(out),
                "--data",
                str(other),
                "--cache",
                str(tmp_path / "store"),
                "--allow-overlap",  # phantom sets number their patients alike
            ]
        )
        == 0
    )
    (folder,) = out.glob("external-phantoms-*")
    ext = json.loads((folder / "metrics.json").read_text())
    assert ext["n_test"] == len(pd.read_csv(folder / "predictions.csv"))
    assert ext["n_test"] > 90  # every frontal image of the external set, nothing carved out


def test_label_without_test_positives_reports_no_auc(shared_data, tmp_path, capsys):
    """NIH subset (Wang et al. 2017): rare findings may have no test positives; say so, not 0.5."""
    out = tmp_path / "n"
    assert classify(tmp_path, shared_data / "nih_chestxray14_1000", out, "--size", "32") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    none_auc = [k for k, m in metrics["auc"].items() if m["auc"] is None]
    assert none_auc, "expected at least one rare NIH label without test positives"
    assert all("no positive" in metrics["auc"][k]["reason"] for k in none_auc)
    assert "no AUC" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--arm", "mixup"], "unknown arm"),
        (["--model", "alexnet"], "unknown model"),
        (["--arm", "gan"], "needs synthetic images"),
        (["--classes", "Hernia"], "no positive images in the test split"),
    ],
)
def test_bad_classify_inputs(shared_data, tmp_path, capsys, extra, needle):
    code = classify(
        tmp_path, shared_data / "nih_chestxray14_1000", tmp_path / "x", "--size", "32", *extra
    )
    assert code == 2 and needle in capsys.readouterr().err


def test_synthetic_rows_can_never_be_evaluated():
    frame = pd.DataFrame({"image_id": ["a", "synthetic:run:s0:1"], "synthetic": [False, False]})
    with pytest.raises(RareganError, match="synthetic rows found in the test split"):
        assert_no_synthetic(frame, "test")
    flagged = pd.DataFrame({"image_id": ["a", "b"], "synthetic": [False, True]})
    with pytest.raises(RareganError, match="val split"):
        assert_no_synthetic(flagged, "val")


def test_positive_weights_count_known_labels_only():
    from pipelines.classifier.run import positive_weights

    y = np.array([[1, 0], [0, np.nan], [0, 1], [0, 0]], dtype=np.float32)
    assert positive_weights(y) == [3.0, 2.0]


def test_knee_ordinal_kappa_beats_majority_baseline(shared_data, tmp_path):
    """Knee KL grades 0-4 (Chen 2018): an ordinal CORN model must beat predicting the majority grade."""
    out = tmp_path / "knee"
    assert classify(tmp_path, shared_data / "knee_kl", out, "--size", "32", "--fraction", "50") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # a constant (majority-grade) predictor has kappa exactly 0 and one nonzero predicted count
    assert metrics["qwk"] > 0.2
    predicted = [d["pred_n"] for d in metrics["distribution"].values()]
    assert sum(p > 0 for p in predicted) >= 3


def test_cross_validation_and_resume(phantom_root, tmp_path, capsys):
    out = tmp_path / "cv"
    assert classify(tmp_path, phantom_root, out, "--size", "32", "--folds", "2") == 0
    folds = pd.read_csv(out / "cv_folds.csv")
    summary = json.loads((out / "cv_summary.json").read_text())
    assert len(folds) == 2 and summary["macro_auc"]["mean"] == pytest.approx(
        folds["macro_auc"].mean()
    )
    assert "2-fold CV" in capsys.readouterr().out
    # resume: a run whose DONE is gone continues from its last checkpoint to the same number of epochs
    run = out / "fold0"
    (run / "DONE").unlink()
    stamp = (out / "fold1" / "DONE").stat().st_mtime_ns
    assert classify(tmp_path, phantom_root, out, "--size", "32", "--folds", "2", "--resume") == 0
    assert (run / "DONE").is_file()
    assert (out / "fold1" / "DONE").stat().st_mtime_ns == stamp, "the finished fold is reused"
    # the fold's run under the plain split is another run: refused, never resumed with other data
    (run / "DONE").unlink()
    assert classify(tmp_path, phantom_root, run, "--size", "32", "--resume") == 2
    assert "train:" in capsys.readouterr().err


def test_ddp_with_two_cpu_processes(phantom_root, tmp_path):
    """Lightning DDP (gloo) with 2 CPU processes trains and evaluates like one process would."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    argv = [
        sys.executable,
        "-m",
        "pipelines",
        "classify",
        "--data",
        str(phantom_root),
        "--model",
        "cnn5",
        "--epochs",
        "1",
        "--size",
        "32",
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "store"),
        "--no-progress",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == metrics["n_test"] and metrics["auc"]["macro"]["auc"] is not None


def test_balanced_weights_favour_rare_positives_and_amp_only_on_gpu():
    from pipelines.classifier.arms import balanced_weights
    from pipelines.classifier.run import precision

    y = np.zeros((100, 2), dtype=np.float32)
    y[:30, 0] = 1  # common label
    y[30:33, 1] = 1  # rare label
    w = balanced_weights(y)
    # each label's positives, and the negatives, get about the same total weight
    assert w[30:33].sum() == pytest.approx(w[:30].sum(), rel=0.01)
    assert w[30:33].min() > w[:30].max() > 0 and (w[33:] > 0).all()
    assert precision("gpu") == "16-mixed" and precision("cpu", "32") == "32-true"


def test_bf16_on_the_cpu_only_where_it_is_native(monkeypatch, capsys):
    from pipelines import machine
    from pipelines.classifier import run as run_module

    monkeypatch.setattr(machine, "cpu_bf16", lambda: True)
    assert run_module.precision("cpu") == "bf16-mixed" == run_module.precision("cpu", "bf16")
    monkeypatch.setattr(machine, "cpu_bf16", lambda: False)
    assert run_module.precision("cpu") == "32-true" and not capsys.readouterr().err
    assert run_module.precision("cpu", "bf16") == "32-true"  # asked for, not there: fp32 + warning
    err = capsys.readouterr().err
    assert err.startswith("raregan: warning:") and "no native bf16" in err


def test_classify_writes_calibration_thresholds_and_train_val_ids(phantom_run):
    import hashlib

    from classify.calibration import brier_score, expected_calibration_error, threshold_metrics

    metrics = json.loads((phantom_run / "metrics.json").read_text())
    preds = pd.read_csv(phantom_run / "predictions.csv")
    cal, thr = metrics["calibration"], metrics["thresholds"]
    assert cal["n_bins"] == 10 and cal["bins"] == "equal-width" and "Youden" in thr["rule"]
    for name in ("Fracture", "Lung Lesion", "Pleural Other"):
        y, s = preds[name].to_numpy(float), preds[f"score:{name}"].to_numpy(float)
        assert cal["per_label"][name]["ece"] == pytest.approx(expected_calibration_error(y, s, 10))
        assert cal["per_label"][name]["brier"] == pytest.approx(brier_score(y, s))
        t = thr["per_label"][name]
        if t["threshold"] is not None:  # chosen on val, applied to test
            at = threshold_metrics(y, s, t["threshold"])
            assert t["sensitivity"] == at["sensitivity"] and t["specificity"] == at["specificity"]
            assert -1 <= t["val_j"] <= 1
    assert (phantom_run / "calibration.png").is_file()
    ids = pd.read_csv(phantom_run / "train_val_ids.csv", dtype=str)
    assert list(ids.columns) == [
        "image_id", "patient", "split", "pixel_sha1", "phash", "size", "resize"
    ]  # fmt: skip
    assert set(ids["split"]) == {"train", "val"} and (ids["size"] == "32").all()
    assert (ids["split"] == "train").sum() == metrics["n_train_real"]
    assert not set(ids["patient"]) & set(preds["patient"].astype(str))  # test patients are apart
    assert ids["pixel_sha1"].str.fullmatch(r"[0-9a-f]{40}").all()
    assert ids["phash"].astype(str).str.fullmatch(r"[0-9a-f]{16}").all()
    assert hashlib.sha1(b"").hexdigest() not in set(ids["pixel_sha1"])


def test_last_checkpoint_every_epoch_and_one_line_per_epoch(
    phantom_root, tmp_path, capsys, monkeypatch
):
    import torch

    from classify import Classifier

    def flat_val_auc(self):  # val AUC never improves after the first epoch
        for metric in self.val_auroc:
            metric.reset()
        self.val_counts.reset()
        self.log_dict({"val_auc": 0.5, "val_auc_studied": 0.5})

    monkeypatch.setattr(Classifier, "on_validation_epoch_end", flat_val_auc)
    out = tmp_path / "flat"
    assert classify(tmp_path, phantom_root, out, "--size", "32", "--epochs", "3") == 0
    best, last = (
        torch.load(out / "checkpoints" / f"{n}.ckpt", weights_only=False) for n in ("best", "last")
    )
    assert best["epoch"] == 0 and last["epoch"] == 2, "last.ckpt is written after every epoch"
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("train_loss " in ln and "val_loss " in ln and "val_auc 0.5000" in ln for ln in lines)

"""The literature's recipes as arms of a sweep: synthetic pretraining then real fine-tuning
(gan_pretrain) and the synthetic ratio chosen on validation (gan_ratio)."""

from __future__ import annotations

import json

import pandas as pd
from test_sweep_cells import main_output, tiny_argv

from pipelines.experiment.records import read_record


def test_gan_pretrain_starts_from_the_gan_arms_classifier_and_trains_on_real_rows(
    phantom_root, tmp_path
):
    """Synthetic pretraining (RoentGen-v2's recipe): the gan_pretrain classifier of a fraction and
    seed needs the gan arm's, starts from its weights and trains on the real rows alone; its Δ
    against gan is its second comparison; without the gan arm it is refused in one line."""
    import torch

    from pipelines.classifier.run import start_weights

    argv = tiny_argv(phantom_root, tmp_path, "pre", ["none", "gan", "gan_pretrain"])
    code, out, err = main_output([*argv, "--list-cells"])
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0, err
    assert rows[-1] == ["3", "pending", "classify-gan_pretrain-f100-s0", "2"]
    assert rows[2][2] == "classify-gan-f100-s0"
    assert main_output(argv)[0] == 0
    clf = tmp_path / "runs/phantoms/classify"
    gan_run, pre_run = clf / "pre-cnn5-gan-f100-s0", clf / "pre-cnn5-gan_pretrain-f100-s0"
    settings = json.loads((pre_run / "fingerprint.json").read_text())["settings"]
    assert settings["start_from"] == json.loads((gan_run / "fingerprint.json").read_text())["id"]
    metrics = json.loads((pre_run / "metrics.json").read_text())
    assert metrics["n_train_synthetic"] == 0 and metrics["arm"] == "gan_pretrain"
    record = read_record(
        tmp_path / "runs/phantoms/compare/pre/cells", "classify-gan_pretrain-f100-s0"
    )
    assert list(record["made_from"]) == ["classify-gan-f100-s0"]
    table = pd.read_csv(tmp_path / "runs/phantoms/compare/pre/auc_table.csv")
    assert table.loc[table["arm"] == "gan_pretrain", "ref2"].item() == "gan"
    # the weights it starts from are the gan arm's best checkpoint's, exactly
    from pipelines.classifier.run import build_module
    from pipelines.config import load_config

    names = ["No Finding", "Fracture"]
    module = build_module(load_config(None), names, "multilabel", "none", "cnn5", None, 0)
    ckpt = tmp_path / "one.ckpt"
    torch.save({"state_dict": module.state_dict()}, ckpt)
    other = build_module(load_config(None), names, "multilabel", "none", "cnn5", None, 0)
    start_weights(other, ckpt)
    assert all(
        torch.equal(a, b)
        for a, b in zip(module.state_dict().values(), other.state_dict().values(), strict=True)
    )
    code, _, err = main_output(
        [*tiny_argv(phantom_root, tmp_path, "pre2", ["none", "gan_pretrain"]), "--list-cells"]
    )
    assert code == 2 and "the gan_pretrain arm starts from the gan arm's classifiers" in err


def test_gan_ratio_chooses_its_synthetic_ratio_on_validation_never_on_test(phantom_root, tmp_path):
    """The ratio arm trains one gan-arm classifier per ratio of compare.ratio_grid (sets drawn from
    the same GAN), keeps the one with the best validation score (not test's), and its record and
    report say which ratio it chose and every ratio's validation score."""
    argv = tiny_argv(phantom_root, tmp_path, "ratio", ["none", "gan", "gan_ratio"])
    argv += ["--set", "compare.ratio_grid=[0.5,2]"]
    assert main_output(argv)[0] == 0
    run = tmp_path / "runs/phantoms/classify/ratio-cnn5-gan_ratio-f100-s0"
    scores = {
        r: json.loads((run / f"ratio-{r}" / "metrics.json").read_text())["best_val"]
        for r in ("0.5", "2")
    }
    best = max((0.5, 2.0), key=lambda r: (scores[f"{r:g}"], -r))
    record = read_record(
        tmp_path / "runs/phantoms/compare/ratio/cells", "classify-gan_ratio-f100-s0"
    )
    assert record["metrics"]["chosen_ratio"] == best
    assert record["metrics"]["val_by_ratio"] == {"0.5": scores["0.5"], "2.0": scores["2"]}
    chosen = pd.read_csv(run / f"ratio-{best:g}" / "predictions.csv")
    assert chosen.equals(pd.read_csv(run / "predictions.csv"))
    n_real = json.loads((run / "ratio-2" / "metrics.json").read_text())["n_train_synthetic"]
    n_half = json.loads((run / "ratio-0.5" / "metrics.json").read_text())["n_train_synthetic"]
    assert n_real == 4 * n_half  # 2× vs 0.5× the real positives
    report = (tmp_path / "runs/phantoms/compare/ratio/report.md").read_text()
    assert f"gan_ratio at 100 %, seed 0: chose {best:g}× the real positives on validation" in report
    assert main_output([*argv, "--collect"])[0] == 0  # its record is checked like any classifier's
    clf = [
        "classify",
        "--data",
        str(phantom_root),
        "--arm",
        "gan_ratio",
        "--out",
        str(tmp_path / "x"),
    ]
    code, _, err = main_output([*clf, "--cache", str(tmp_path / "store")])
    assert code == 2 and "run it in a sweep" in err

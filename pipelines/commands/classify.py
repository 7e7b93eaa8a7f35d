"""`raregan classify`: train a classifier on a train fraction (one arm), select on val, evaluate on test."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipelines.arms import sweep_only
from pipelines.commands.common import (
    add_data_arguments,
    folder_arg,
    folds_arg,
    moved_flag,
    print_data_notes,
    run_options,
)
from pipelines.commands.settings import resolve_config
from pipelines.errors import RareganError
from pipelines.runs import run_path, write_json

NAME = "classify"
HELP = "train a classifier (DenseNet-121 …) on a train fraction for one arm; select on val; evaluate once on test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus fraction, arm, model, seeds and devices."""
    from pipelines.arms import ARMS

    add_data_arguments(
        parser,
        "fraction",
        "model",
        "classes",
        "epochs",
        "config",
        run=True,
        model={
            "help": "densenet121 (default), resnet18, resnet50, vgg16, cnn5, xception, nasnetalarge"
        },
        classes={
            "default": [],
            "help": "rare classes that must have train and test positives (filters: their "
            "positives are copied through the filter bank; synth_only: their real positives "
            "are left out, so only the synthetic ones train: train on synthetic, test on real)",
        },
    )
    arms = ", ".join(a for a in ARMS if not sweep_only(a))
    parser.add_argument("--arm", default="none", help=f"augmentation arm: {arms}")
    moved_flag(parser, "--head", "classify.head")  # hidden: --set classify.head=fc512-256
    parser.add_argument(
        "--synth",
        type=Path,
        nargs="*",
        default=[],
        help="synthetic sets to mix in (gan arms, synth_only)",
    )
    parser.add_argument(
        "--train-seed", type=int, default=0, help="seed of initialisation and batch order"
    )
    parser.add_argument(
        "--pretrained", type=Path, help="local ImageNet state dict (nothing downloads)"
    )
    parser.add_argument("--freeze", type=int, default=0, help="freeze the first N blocks")
    parser.add_argument(
        "--folds",
        type=folds_arg,
        default=0,
        help="patient-grouped k-fold cross-validation over train+val (k ≥ 2; default 0: none)",
    )
    parser.add_argument(
        "--out",
        type=folder_arg,
        help="run folder (default runs/<dataset>/classify/<model>-<arm>-f<fraction>-s<seed>)",
    )


# the command's own flags that set a config key: flag → (section, key)
CONFIG_FLAGS = {
    "train_seed": ("classify", "seed"),
    "model": ("classify", "model"),
    "head": ("classify", "head"),
    "epochs": ("classify", "epochs"),
}


def cross_validate(prepared, cfg, out: Path, args, kwargs) -> dict:
    """k patient-grouped folds over train+val (test untouched): mean ± std of each test metric."""
    import numpy as np
    import pandas as pd

    from pipelines.classifier.run import train_classifier
    from pipelines.data.splits import iterative_stratification, patient_label_counts

    frame = prepared.records.frame
    pool = frame["split"].isin(["train", "val"]).to_numpy()
    sub = prepared.records.subset(pool)
    patients, sizes, counts = patient_label_counts(sub, sub.label_names)
    fold = iterative_stratification(
        np.ones_like(sizes),
        (counts > 0).astype(float),
        [1.0] * args.folds,
        np.random.default_rng(cfg["data"]["seed"]),
    )
    by_patient = pd.Series(fold, index=patients)
    original = frame["split"].copy()
    rows = []
    for k in range(args.folds):
        in_k = frame["patient"].map(by_patient).to_numpy() == k
        frame["split"] = np.where(pool, np.where(in_k, "val", "train"), original)
        metrics = train_classifier(prepared, cfg, out / f"fold{k}", **kwargs)
        if not metrics:  # finished earlier: read it back
            metrics = json.loads((out / f"fold{k}" / "metrics.json").read_text())
        row = {
            "fold": k,
            "macro_auc": metrics["auc"]["macro"]["auc"],
            "accuracy": metrics["accuracy"],
        }
        row.update(
            {f"auc:{n}": v["auc"] for n, v in metrics["auc"].items() if n not in ("macro", "micro")}
        )
        rows.append(row)
    frame["split"] = original
    table = pd.DataFrame(rows).set_index("fold")
    summary = {
        c: {"mean": float(table[c].mean()), "std": float(table[c].std(ddof=1))}
        for c in table.columns
    }
    table.to_csv(out / "cv_folds.csv")
    write_json(out / "cv_summary.json", summary)
    return summary


def run(args: argparse.Namespace) -> int:
    """Prepare the data, train (or cross-validate), print the test AUCs."""
    from pipelines.classifier.arms import check_arm
    from pipelines.classifier.run import train_classifier
    from pipelines.data.prepare import prepare
    from pipelines.data.splits import check_fractions

    check_arm(args.arm)
    if why := sweep_only(args.arm):  # refused before any work
        raise RareganError(why)
    check_fractions([args.fraction])
    cfg, spec = resolve_config(args, CONFIG_FLAGS)
    prepared = prepare(spec, progress=not args.no_progress)
    print_data_notes(prepared)
    model = cfg["classify"]["model"]
    name = f"{model}-{args.arm}-f{args.fraction:g}-s{args.train_seed}"
    out = args.out or run_path(args.runs, prepared.dataset_name, "classify", name)
    kwargs = dict(
        fraction=args.fraction,
        arm=args.arm,
        classes=args.classes,
        synth=args.synth,
        pretrained=args.pretrained,
        freeze=args.freeze,
        opts=run_options(args),
    )
    if args.folds:
        summary = cross_validate(prepared, cfg, out, args, kwargs)
        print(
            f"{args.folds}-fold CV ({out}): macro AUC {summary['macro_auc']['mean']:.3f} ± {summary['macro_auc']['std']:.3f}"
        )
        return 0
    train_classifier(prepared, cfg, out, **kwargs)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return 0  # DDP worker: rank 0 evaluates and reports
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"test AUC ({out}; {metrics['n_test']} images, {metrics['n_test_patients']} patients):")
    for label in [*prepared.records.label_names, "macro", "micro"]:
        m = metrics["auc"][label]
        text = (
            f"{m['auc']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"
            if m["auc"] is not None
            else f"no AUC ({m['reason']})"
        )
        print(f"  {label:28s} {text}")
    if "qwk" in metrics:
        print(f"  quadratic weighted kappa     {metrics['qwk']:.3f}")
    return 0

"""`raregan evaluate`: a finished classifier on another dataset of the same label space (external test set)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from pipelines.classifier.run import evaluate
from pipelines.commands.common import add_data_arguments, spec_from_args
from pipelines.data.prepare import prepare
from pipelines.data.store import StoreDataset
from pipelines.errors import RareganError
from pipelines.runs import mark_done, staged_dir, write_json

NAME = "evaluate"
HELP = "evaluate a finished classifier run on another dataset with the same labels (all its images are the test set)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, the external data and the output folder."""
    parser.add_argument("--run", type=Path, required=True, help="a finished classifier run folder")
    add_data_arguments(parser)
    parser.add_argument(
        "--out", type=Path, help="output folder (default <run>/external-<data name>)"
    )


def run(args: argparse.Namespace) -> int:
    """Predict every image of the external dataset, write predictions.csv and metrics.json."""
    from classify import Classifier

    best = args.run / "checkpoints" / "best.ckpt"
    if not (args.run / "DONE").is_file() or not best.is_file():
        raise RareganError(
            f"{args.run} is not a finished classifier run (needs DONE and checkpoints/best.ckpt)"
        )
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    module = Classifier.load_from_checkpoint(best, map_location="cpu", pretrained=None)
    args.size = args.size or cfg["data"]["size"]
    args.val = args.test = 0.0  # nothing is carved out: every image is evaluated
    prepared = prepare(spec_from_args(args, cfg), progress=False)
    rec = prepared.records
    missing = [n for n in module.label_names if n not in rec.label_names]
    if missing:
        raise RareganError(
            f"{args.data} lacks labels {missing} the classifier was trained on; "
            "map labels with --label-map or evaluate on data with the same label space"
        )
    frame = rec.frame
    labels = frame[module.label_names].to_numpy(np.float32)
    dataset = StoreDataset(prepared.store, frame["row"].to_numpy(), labels)
    preds, metrics = evaluate(module, frame, dataset, module.label_names, module.task.kind, cfg)
    metrics.update({"external_data": str(args.data), "run": str(args.run)})
    out = args.out or args.run / f"external-{prepared.dataset_name}"
    with staged_dir(out, "evaluate") as tmp:
        preds.to_csv(tmp / "predictions.csv", index=False)
        write_json(tmp / "metrics.json", metrics)
        mark_done(tmp)
    macro = metrics["auc"]["macro"]
    text = (
        f"{macro['auc']:.3f} [{macro['lo']:.3f}, {macro['hi']:.3f}]"
        if macro["auc"] is not None
        else "undefined"
    )
    print(f"external test on {args.data}: {len(frame)} images, macro AUC {text}; written to {out}")
    print(json.dumps({k: v["auc"] for k, v in metrics["auc"].items()}, indent=1))
    return 0

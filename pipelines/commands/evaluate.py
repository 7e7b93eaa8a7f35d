"""`raregan evaluate`: a finished classifier on another dataset of the same label space (external test set)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.commands.common import DATA_OPTIONS, spec_from_args
from pipelines.errors import RareganError
from pipelines.runs import check_replaceable, mark_done, staged_dir, write_json

if TYPE_CHECKING:  # pandas, torch and the classifier load when the command runs, not for --help
    import pandas as pd

NAME = "evaluate"
HELP = "evaluate a finished classifier run on another dataset with the same labels (all its images are the test set)"


# the data options that apply to an external test set: how to read it, not how to split or size it
# (every image is evaluated, at the run's image size; uncertain CheXpert labels are unknown)
APPLIES = ("--data", "--format", "--all-views", "--patient-pattern", "--task", "--label-map",
           "--resize", "--cache", "--workers")  # fmt: skip
# the other data options, fixed: one split holding every image, the run's size
FIXED = {
    "uncertainty": None,
    "rarefy": None,
    "seed": 0,
    "val": 0.0,
    "test": 0.0,
    "resplit": True,
    "allow_duplicates": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, the external data (the data options that apply), the overlap switch, the output."""
    parser.add_argument("--run", type=Path, required=True, help="a finished classifier run folder")
    group = parser.add_argument_group(
        "external data",
        "every image is a test image, stored at the run's size; CheXpert's uncertain (-1) labels "
        "are unknown, as in a test split",
    )
    for flag, kwargs in DATA_OPTIONS:
        if flag == "--resize":
            kwargs = {
                **kwargs,
                "default": None,
                "help": "non-square images: pad or crop (default: the run's)",
            }
        if flag in APPLIES:
            group.add_argument(flag, **kwargs)
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even when the data shares images or patients with the run's train/val data",
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default <run>/external-<data name>-<path hash>)"
    )


def warn(text: str) -> None:
    """One warning line on stderr."""
    print(f"raregan: warning: {text}", file=sys.stderr)


def read_seen(run: Path) -> pd.DataFrame | None:
    """The run's train/val images (train_val_ids.csv), or None for a run made before it was written."""
    import pandas as pd

    path = run / "train_val_ids.csv"
    if not path.is_file():
        return None
    return pd.read_csv(
        path, dtype={"image_id": str, "patient": str, "split": str, "pixel_sha1": str, "phash": str}
    )


NEAR_BITS = 4  # the split's near-duplicate distance (pipelines/data/leakage.py)


def near_copies(store, rows: np.ndarray, seen: pd.DataFrame) -> np.ndarray:
    """Which external images (store rows) lie within NEAR_BITS of a train/val image's perceptual
    hash; none flagged for a run made before train_val_ids.csv held the hashes."""
    from pipelines.data.leakage import find_cross_split_duplicates, hash_rows

    near = np.zeros(len(rows), dtype=bool)
    if "phash" not in seen.columns or not len(seen) or not len(rows):
        return near
    known = np.array([int(h, 16) for h in seen["phash"]], dtype=np.uint64)
    ext, _ = hash_rows(store, rows)
    hashes = np.concatenate([known, ext])
    splits = ["train/val"] * len(known) + ["external"] * len(ext)
    ids = np.arange(len(hashes)).astype("S16")  # no exact-duplicate flag wanted here
    pairs = find_cross_split_duplicates(hashes, ids, splits, NEAR_BITS)
    near[pairs["j"].to_numpy() - len(known)] = True  # i < j: the train/val image comes first
    return near


def check_overlap(args: argparse.Namespace, seen, frame: pd.DataFrame, store) -> dict:
    """Images (pixel SHA-1 in the store at the run's size) and patients the external set shares with
    the run's train/val data; a user error unless --allow-overlap (then a warning)."""
    from pipelines.classifier.evaluation import pixel_hashes

    if seen is None:
        warn(
            f"{args.run} has no train_val_ids.csv (made before raregan wrote it): not checked "
            f"whether {args.data} shares images or patients with its train/val data"
        )
        return {"checked": False}
    same_image = np.isin(pixel_hashes(store, frame["row"].to_numpy()), seen["pixel_sha1"])
    near = near_copies(store, frame["row"].to_numpy(), seen) & ~same_image
    if len(seen) and (store.size, store.resize) != (seen["size"].iloc[0], seen["resize"].iloc[0]):
        warn(f"{args.data} is stored with another resize policy than the run: images not compared")
        same_image[:] = near[:] = False
    same_patient = frame["patient"].astype(str).isin(seen["patient"]).to_numpy()
    n_images, n_patients = int(same_image.sum()), int(frame.loc[same_patient, "patient"].nunique())
    out = {
        "checked": True,
        "images": n_images,
        "patients": n_patients,
        "near_copies": int(near.sum()),
    }
    parts = []
    if n_images:
        example = frame["path"].to_numpy()[same_image][0]
        parts.append(
            f"{n_images} of its {len(frame)} images are pixel-identical to the run's train/val "
            f"images (e.g. {example})"
        )
    if near.any():
        example = frame["path"].to_numpy()[near][0]
        parts.append(
            f"{int(near.sum())} of its images are near-copies (perceptual hash within "
            f"{NEAR_BITS} bits, e.g. a re-saved JPEG) of the run's train/val images (e.g. {example})"
        )
    if n_patients:
        example = frame.loc[same_patient, "patient"].iloc[0]
        parts.append(
            f"{n_patients} of its patients are train/val patients of the run (e.g. {example})"
        )
    if not parts:
        return out
    text = f"{args.data} is not external to {args.run}: {' and '.join(parts)}"
    if not args.allow_overlap:
        raise RareganError(
            f"{text}; evaluate on images of other patients, or pass --allow-overlap to evaluate "
            "anyway (the result is then no external test)"
        )
    warn(f"{text}; evaluated anyway (--allow-overlap): this is no external test")
    return out


def default_out(run: Path, data: Path, name: str) -> Path:
    """<run>/external-<data name>-<8 hex of the resolved data path>: one folder per data set."""
    digest = hashlib.sha1(str(Path(data).expanduser().resolve()).encode()).hexdigest()[:8]
    return run / f"external-{name}-{digest}"


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def summary_lines(metrics: dict, label_names: list[str]) -> list[str]:
    """AUCs with their CIs (as `classify` prints them), ECE and Brier, sensitivity / specificity."""
    lines = []
    for label in [*label_names, "macro", "micro"]:
        m = metrics["auc"][label]
        text = (
            f"{m['auc']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"
            if m["auc"] is not None
            else f"no AUC ({m['reason']})"
        )
        lines.append(f"  {label:28s} {text}")
    cal = metrics["calibration"]
    lines.append(f"calibration ({cal['n_bins']} equal-width bins):")
    for label in label_names:
        c = cal["per_label"][label]
        lines.append(f"  {label:28s} ECE {_num(c['ece'])}, Brier {_num(c['brier'])}")
    if "thresholds" in metrics:
        lines.append("at the run's val thresholds (Youden's J):")
        for label in label_names:
            t = metrics["thresholds"]["per_label"][label]
            lines.append(
                f"  {label:28s} no threshold ({t.get('reason')})"
                if t.get("threshold") is None
                else f"  {label:28s} ≥ {t['threshold']:.3f}: sensitivity {_num(t['sensitivity'])}, "
                f"specificity {_num(t['specificity'])}"
            )
    return lines


def run_thresholds(run: Path) -> dict | None:
    """The per-label thresholds the run chose on val ({label: {threshold, val_j, reason}}), or None."""
    path = run / "metrics.json"
    per = (
        json.loads(path.read_text()).get("thresholds", {}).get("per_label")
        if path.is_file()
        else None
    )
    if not per:
        return None
    return {n: {k: t.get(k) for k in ("threshold", "val_j", "reason")} for n, t in per.items()}


def run(args: argparse.Namespace) -> int:
    """Predict every image of the external dataset; write predictions, metrics and figures."""
    import yaml

    from classify import Classifier
    from pipelines.classifier import plots as cp
    from pipelines.classifier.evaluation import N_BINS, evaluate
    from pipelines.data.prepare import prepare, unknown_if_uncertain_outside_train
    from pipelines.data.store import StoreDataset
    from pipelines.machine import run_device

    if args.out is not None:
        check_replaceable(args.out, "evaluate")  # before any work
    best = args.run / "checkpoints" / "best.ckpt"
    if not (args.run / "DONE").is_file() or not best.is_file():
        raise RareganError(
            f"{args.run} is not a finished classifier run (needs DONE and checkpoints/best.ckpt)"
        )
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    module = Classifier.load_from_checkpoint(best, map_location=run_device(), pretrained=None)
    seen = read_seen(args.run)
    vars(args).update(FIXED, size=cfg["data"]["size"])
    if args.resize is None:
        args.resize = str(seen["resize"].iloc[0]) if seen is not None and len(seen) else "pad"
    prepared = prepare(spec_from_args(args, cfg), progress=False)
    rec = prepared.records
    missing = [n for n in module.label_names if n not in rec.label_names]
    if missing:
        raise RareganError(
            f"{args.data} lacks labels {missing} the classifier was trained on; "
            "map labels with --label-map or evaluate on data with the same label space"
        )
    rec.frame["split"] = "test"  # every image is a test image: uncertain labels are unknown
    frame = unknown_if_uncertain_outside_train(rec).frame
    overlap = check_overlap(args, seen, frame, prepared.store)
    names = list(module.label_names)
    thresholds = run_thresholds(args.run)
    if thresholds is None:
        warn(f"{args.run} recorded no val thresholds (made before raregan chose them)")
    labels = frame[names].to_numpy(np.float32)
    dataset = StoreDataset(prepared.store, frame["row"].to_numpy(), labels)
    preds, metrics = evaluate(
        module, frame, dataset, names, module.task.kind, cfg, thresholds=thresholds
    )
    metrics.update({"external_data": str(args.data), "run": str(args.run), "overlap": overlap})
    out = args.out or default_out(args.run, args.data, prepared.dataset_name)
    y = preds[names].to_numpy(np.float64)
    scores = preds[[f"score:{n}" for n in names]].to_numpy()
    with staged_dir(out, "evaluate") as tmp:
        preds.to_csv(tmp / "predictions.csv", index=False)
        write_json(tmp / "metrics.json", metrics)
        cp.roc_curves(tmp / "roc_curves.png", y, scores, names, title="ROC on the external set")
        title = "reliability on the external set"
        cp.reliability_png(tmp / "calibration.png", y, scores, names, N_BINS, title)
        mark_done(tmp)
    print(
        f"external test on {args.data} ({metrics['n_test']} images, "
        f"{metrics['n_test_patients']} patients; written to {out}); AUC [95 % CI]:"
    )
    print("\n".join(summary_lines(metrics, names)))
    return 0

"""A classifier's evaluation: predictions, metrics with CIs, calibration and val-chosen thresholds,
and the pixel hashes that tell which images a run saw."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from classify import Classifier, classification_report, per_label_report
from classify.calibration import (
    brier_score,
    expected_calibration_error,
    threshold_metrics,
    youden_threshold,
)
from pipelines.data.leakage import hash_rows
from pipelines.data.prepare import Prepared


def predict(module: Classifier, dataset, batch: int) -> np.ndarray:
    """Scores (N, L) for a dataset, in order, on one device."""
    module.eval()
    out = []
    with torch.no_grad():
        for images, _ in DataLoader(dataset, batch_size=batch, shuffle=False):
            out.append(module.task.scores(module(images.to(module.device))).float().cpu())
    return torch.cat(out).numpy()


N_BINS = 10  # equal-width probability bins of the ECE and the reliability diagram
THRESHOLD_RULE = (
    "per label, the val-prediction score maximizing Youden's J = sensitivity + specificity - 1 "
    "(ties: the highest); a score >= threshold is called positive"
)


def choose_thresholds(scores: np.ndarray, y: np.ndarray, label_names: list[str]) -> dict:
    """Per-label thresholds by Youden's J on (val) scores: {label: {threshold, val_j, reason}}."""
    out = {}
    for j, name in enumerate(label_names):
        t = youden_threshold(y[:, j], scores[:, j])
        reason = t["reason"] and f"{t['reason']} in val"
        out[name] = {"threshold": t["threshold"], "val_j": t["j"], "reason": reason}
    return out


def calibration_and_thresholds(
    y: np.ndarray, scores: np.ndarray, label_names: list[str], thresholds: dict | None
) -> dict:
    """ECE and Brier score per label, and sensitivity / specificity at the given thresholds."""
    out = {
        "calibration": {
            "n_bins": N_BINS,
            "bins": "equal-width",
            "per_label": {
                n: {
                    "ece": expected_calibration_error(y[:, j], scores[:, j], N_BINS),
                    "brier": brier_score(y[:, j], scores[:, j]),
                    "n": int(np.isfinite(y[:, j]).sum()),
                }
                for j, n in enumerate(label_names)
            },
        }
    }
    if thresholds:
        per = {}
        for j, name in enumerate(label_names):
            chosen = thresholds.get(name) or {"threshold": None, "reason": "no threshold"}
            at = (
                {}
                if chosen["threshold"] is None
                else threshold_metrics(y[:, j], scores[:, j], chosen["threshold"])
            )
            per[name] = {**chosen, **at}
        out["thresholds"] = {"rule": THRESHOLD_RULE, "per_label": per}
    return out


def evaluate(
    module: Classifier,
    frame: pd.DataFrame,
    dataset,
    label_names: list[str],
    task: str,
    cfg: dict,
    val: tuple[pd.DataFrame, object] | None = None,
    thresholds: dict | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Predictions and metrics: AUCs with CIs, class report, calibration, and sensitivity /
    specificity at thresholds chosen on `val` (frame, dataset) or given ({label: {threshold}})."""
    batch = cfg["classify"]["batch_size"]
    scores = predict(module, dataset, batch)
    if val is not None:
        val_y = val[0][label_names].to_numpy(np.float64)
        thresholds = choose_thresholds(predict(module, val[1], batch), val_y, label_names)
    y = frame[label_names].to_numpy(np.float64)
    preds = frame[["image_id", "patient", "path"]].reset_index(drop=True).copy()
    for j, name in enumerate(label_names):
        preds[name] = y[:, j]
        preds[f"score:{name}"] = scores[:, j]
    n_boot = cfg["compare"]["n_boot"]
    auc = per_label_report(
        label_names, y, scores, frame["patient"].to_numpy(), task, n_boot=n_boot, seed=0
    )
    metrics = {
        "auc": auc.replace({np.nan: None}).to_dict(orient="index"),
        "n_test": len(frame),
        "n_test_patients": int(frame["patient"].nunique()),
    }
    if task == "multilabel":
        report = classification_report(y, (scores > 0.5).astype(int), label_names)
    else:
        report = classification_report(
            np.nanargmax(np.nan_to_num(y, nan=-1), axis=1),
            scores.argmax(axis=1),
            label_names,
            ordinal=task == "ordinal",
        )
    metrics["accuracy"] = report["accuracy"]
    metrics["per_class"] = report["per_class"].to_dict(orient="index")
    metrics["confusion"] = report["confusion"].to_dict(orient="split")
    if report.get("distribution") is not None:
        metrics["distribution"] = report["distribution"].to_dict(orient="index")
    if "qwk" in report:
        metrics["qwk"] = report["qwk"]
    metrics.update(calibration_and_thresholds(y, scores, label_names, thresholds))
    return preds, metrics


def pixel_hashes(store, rows: np.ndarray) -> list[str]:
    """SHA-1 of each stored image's pixels (rows of the store at its size and resize policy)."""
    view = store.view
    return [hashlib.sha1(view[int(r)].tobytes()).hexdigest() for r in rows]


def seen_images(prepared: Prepared, rows: pd.DataFrame) -> pd.DataFrame:
    """The real train rows and val images a run saw: id, patient, split, pixel SHA-1, store size, policy."""
    frame = pd.concat([rows.assign(split="train"), prepared.split("val").frame.assign(split="val")])
    out = frame[["image_id", "patient", "split"]].reset_index(drop=True)
    out["pixel_sha1"] = pixel_hashes(prepared.store, frame["row"].to_numpy())
    hashes, _ = hash_rows(prepared.store, frame["row"].to_numpy())
    out["phash"] = [f"{h:016x}" for h in hashes]  # for `evaluate`'s near-copy check
    out["size"], out["resize"] = prepared.store.size, prepared.store.resize
    return out

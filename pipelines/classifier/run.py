"""A classifier run on disk: train on a fraction (+ synthetic rows), select on val, evaluate once on test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset, WeightedRandomSampler

from classify import MODELS, Classifier, classification_report, per_label_report
from classify.metrics import (
    brier_score,
    expected_calibration_error,
    threshold_metrics,
    youden_threshold,
)
from pipelines.data.prefilter import expand
from pipelines.data.prepare import Prepared
from pipelines.data.store import StoreDataset
from pipelines.data.synthetic import load_synthetic
from pipelines.errors import RareganError
from pipelines.runs import (
    RunOptions,
    fingerprint,
    frame_id,
    loggers,
    mark_done,
    mixed_precision,
    open_run,
    reuse_or_start,
    run_device,
    run_id,
    save_checkpoint_atomic,
    write_json,
)


class AtomicModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, saving to a temp file renamed when whole: no half-written file."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        parent = super()._save_checkpoint
        save_checkpoint_atomic(trainer, Path(filepath), lambda tmp: parent(trainer, str(tmp)))
        self._last_checkpoint_saved = filepath


ARMS = ("none", "standard", "filters", "gan_nofilter", "gan", "gan_standard", "synth_only")
# train on real rows + synthetic sets; synth_only: train on synthetic, test on real (the real
# positives of --classes left out, so the classes' only positives are the GAN's samples)
SYNTH_ARMS = ("gan_nofilter", "gan", "gan_standard", "synth_only")
AUGMENT_ARMS = ("standard", "gan_standard")  # standard augmentation (rotation, crop)


def check_arm(arm: str) -> None:
    """A user error for an arm that does not exist."""
    if arm not in ARMS:
        raise RareganError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")


def assert_no_synthetic(frame: pd.DataFrame, split: str) -> None:
    """Synthetic rows may only ever train: refuse any in val or test."""
    bad = (
        frame["synthetic"].astype(bool).to_numpy()
        | frame["image_id"].astype(str).str.startswith("synthetic:").to_numpy()
    )
    if bad.any():
        raise RareganError(
            f"{int(bad.sum())} synthetic rows found in the {split} split (e.g. {frame['image_id'][bad].iloc[0]}); "
            "synthetic images may only be used for training"
        )


def classifier_fingerprint(
    prepared: Prepared,
    cfg: dict,
    rows: pd.DataFrame,
    fraction: float,
    arm: str,
    model: str,
    classes: list[str],
    synth: list[Path],
) -> dict:
    """What makes a classifier run (less local weights): config, data, exact train rows, arm, model,
    the synthetic sets' ids and, for the filters arm, its filter bank; `parts` for extra keys."""
    parts = dict(
        classify=cfg["classify"],
        data=prepared.data_id,
        train=frame_id(arm_rows(rows, arm, classes), ["image_id"]),
        fraction=float(fraction),
        arm=arm,
        model=model,
        synth=[run_id(s) for s in synth],
        filters=cfg["filters"] if arm == "filters" else {},
        filter_classes=classes if arm == "filters" else [],
    )
    return {**fingerprint(**parts, pretrained="", freeze=0), "parts": parts}


def train_rows(prepared: Prepared, fraction: float, seed: int, classes: list[str]) -> pd.DataFrame:
    """The train rows of the nested fraction (the GAN's mask too); each class needs a test positive."""
    prepared.require_test_positives(classes)
    return prepared.train_fraction(fraction, seed, classes)


def arm_rows(rows: pd.DataFrame, arm: str, classes: list[str]) -> pd.DataFrame:
    """The real train rows an arm trains on: synth_only leaves out every positive of `classes`."""
    if arm != "synth_only":
        return rows
    return rows[~(rows[classes] > 0.5).any(axis=1).to_numpy()]


def check_gan_saw_only(folder: Path, synth_rows: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Refuse a synthetic set whose GAN learned from real images outside this run's train rows."""
    for gan_run in synth_rows["gan_run"].dropna().unique() if "gan_run" in synth_rows else []:
        positives = Path(gan_run) / "positives.csv"
        if not positives.is_file():
            continue  # a set from elsewhere: nothing to check it against
        seen = pd.read_csv(positives, usecols=["image_id"])["image_id"].astype(str)
        outside = sorted(set(seen) - set(rows["image_id"].astype(str)))
        if outside:
            raise RareganError(
                f"the GAN behind synthetic set {folder} ({gan_run}) learned from {len(outside)} real "
                f"images outside this classifier's train rows (e.g. {outside[0]}); train the GAN on "
                "the same data, split seed and fraction (or a smaller one)"
            )


def filtered_copies(
    prepared: Prepared, rows: pd.DataFrame, classes: list[str], cfg: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The `filters` arm's extra images: the filter-bank copies (originals left out) of the train
    positives of `classes`, each with its source image's label row; (images uint8, labels)."""
    pos = rows[(rows[classes] > 0.5).any(axis=1).to_numpy()]
    expanded, which = expand(prepared.store.array[pos["row"].to_numpy()], cfg)
    labels = np.tile(
        pos[list(prepared.records.label_names)].to_numpy(np.float32),
        (len(which) // max(1, len(pos)), 1),
    )
    keep = np.asarray([w != "original" for w in which])
    return expanded[keep], labels[keep]


def datasets(
    prepared: Prepared,
    rows: pd.DataFrame,
    label_names: list[str],
    synth: list[Path],
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    seen: pd.DataFrame | None = None,
):
    """Train dataset (real store rows + synthetic images + `extra` (images, labels)), val and test.

    `seen`: the real rows the synthetic sets' GANs may have learned from (default `rows`)."""

    def part(frame: pd.DataFrame) -> StoreDataset:
        return StoreDataset(
            prepared.store, frame["row"].to_numpy(), frame[label_names].to_numpy(np.float32)
        )

    parts, n_synth = [part(rows)], 0
    for folder in synth:
        synth_rows, images = load_synthetic(folder, label_names)
        if images.shape[-1] != prepared.store.size:
            raise RareganError(
                f"synthetic images in {folder} are {images.shape[-1]} px but the data store is "
                f"{prepared.store.size} px; synthesize from a GAN of the same resolution"
            )
        check_gan_saw_only(folder, synth_rows, rows if seen is None else seen)
        labels = torch.from_numpy(synth_rows[label_names].to_numpy(np.float32))
        parts.append(TensorDataset(torch.from_numpy(images), labels))
        n_synth += len(synth_rows)
    if extra is not None and len(extra[0]):
        parts.append(TensorDataset(torch.from_numpy(extra[0]), torch.from_numpy(extra[1])))
    val, test = prepared.split("val").frame, prepared.split("test").frame
    assert_no_synthetic(val, "val")
    assert_no_synthetic(test, "test")
    return ConcatDataset(parts), part(val), part(test), n_synth


def check_synthetic_positives(
    labels: np.ndarray, label_names: list[str], classes: list[str]
) -> None:
    """synth_only: each class left out of the real rows needs synthetic positives."""
    for cls in classes:
        if not (labels[:, label_names.index(cls)] > 0.5).any():
            raise RareganError(
                f"the synth_only arm has no positive of {cls!r} left: its real positives are left "
                f"out and the synthetic sets hold none; give --synth sets made by a GAN of {cls!r}"
            )


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that make each label's positives about equally likely (rarest label counts)."""
    pos = np.nan_to_num(labels) > 0.5
    freq = pos.mean(axis=0).clip(1e-6)
    rarest = np.where(pos, 1.0 / freq, 0.0).max(axis=1)
    return np.where(rarest > 0, rarest, 1.0 / max(1e-6, 1.0 - pos.any(axis=1).mean()))


def all_labels(dataset: ConcatDataset) -> np.ndarray:
    """The label matrix of a concatenation of StoreDataset / TensorDataset parts."""
    out = []
    for d in dataset.datasets:
        out.append(d.labels if isinstance(d, StoreDataset) else d.tensors[1].numpy())
    return np.concatenate(out)


def precision(accelerator: str, setting: str = "auto") -> str:
    """Lightning precision: AMP (16-mixed) on a GPU; on the CPU bf16 autocast where the CPU has
    native bf16 ("auto" or "bf16"), else fp32; "32" forces fp32 everywhere."""
    choice = mixed_precision(accelerator, setting, "classify.precision")
    return {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true"}[choice]


def positive_weights(labels: np.ndarray) -> list[float]:
    """Per-label BCE positive weights negatives / positives over the known training labels."""
    known = ~np.isnan(labels)
    pos = ((labels > 0.5) & known).sum(axis=0)
    neg = ((labels < 0.5) & known).sum(axis=0)
    return (neg / np.maximum(pos, 1)).astype(float).tolist()


def selection_metric(monitor: str, classes: list[str]) -> str:
    """What selects the checkpoint and stops early: "auto" is the mean val AUC over the studied
    classes when there are any (so selection sees them), else the macro val AUC."""
    if monitor != "auto":
        return monitor
    return "val_auc_studied" if classes else "val_auc"


def build_module(
    cfg: dict,
    label_names: list[str],
    task: str,
    arm: str,
    model: str,
    pretrained,
    freeze: int,
    pos_weight: list[float] | None = None,
    studied: list[str] = (),
) -> Classifier:
    """The Lightning classifier for this arm (the AUGMENT_ARMS augment, the others do not)."""
    c = cfg["classify"]
    augment = None
    if arm in AUGMENT_ARMS:
        a = c["augment"]
        augment = {"hflip": a["hflip"], "degrees": a["rotate"], "scale": tuple(a["crop_scale"])}
    return Classifier(
        model_name=model,
        label_names=label_names,
        task=task,
        lr=c["lr"],
        weight_decay=c["weight_decay"],
        optimizer=c["optimizer"],
        warmup_epochs=c["warmup_epochs"],
        max_epochs=c["epochs"],
        augment=augment,
        head=c["head"],
        pretrained=pretrained,
        freeze=freeze,
        ordinal=c["ordinal_head"],
        seed=c["seed"],
        pos_weight=pos_weight,
        studied=list(studied),
    )


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
    out["size"], out["resize"] = prepared.store.size, prepared.store.resize
    return out


class EpochLines(pl.Callback):
    """One plain line per epoch on stdout (for --no-progress): epoch, train and val loss, the monitor."""

    def __init__(self, monitor: str):
        self.monitor = monitor

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Print the epoch's means (validation has run by now)."""
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        names = {
            "train_loss_epoch": "train_loss",
            "val_loss": "val_loss",
            self.monitor: self.monitor,
        }
        shown = ", ".join(
            f"{short} {float(metrics[name]):.4f}"
            for name, short in names.items()
            if name in metrics
        )
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown}", flush=True)


def train_classifier(
    prepared: Prepared,
    cfg: dict,
    run: Path,
    fraction: float = 100.0,
    arm: str = "none",
    model: str | None = None,
    classes: list[str] | None = None,
    synth: list[Path] | None = None,
    pretrained: Path | None = None,
    freeze: int = 0,
    opts: RunOptions | None = None,
) -> dict:
    """Train, select on val, evaluate once on test; write the run folder and return its metrics.

    A finished or interrupted run is reused only when its fingerprint matches (`redo`: replaced)."""
    opts = opts or RunOptions()
    progress = opts.progress
    devices, strategy, accelerator = opts.devices, opts.strategy, opts.accelerator
    check_arm(arm)
    run, classes, synth = Path(run), list(classes or []), list(synth or [])
    if arm in SYNTH_ARMS and not synth:
        raise RareganError(
            f"the {arm} arm needs synthetic images: give --synth (folders made by raregan synth)"
        )
    if arm not in SYNTH_ARMS and synth:
        raise RareganError(
            f"synthetic images were given but the arm is {arm!r}; use one of {', '.join(SYNTH_ARMS)}"
        )
    if arm == "filters" and not classes:
        raise RareganError(
            "the filters arm expands the positives of --classes; name the rare classes"
        )
    if arm == "synth_only" and not classes:
        raise RareganError(
            "the synth_only arm leaves out the real positives of --classes; name the GAN's classes"
        )
    rec = prepared.records
    label_names, task, c = list(rec.label_names), rec.task, cfg["classify"]
    model = model or c["model"]
    if model not in MODELS:
        raise RareganError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    for cls in classes:
        rec.label_index(cls)
    rows = train_rows(prepared, fraction, cfg["data"]["seed"], classes)
    fp = classifier_fingerprint(prepared, cfg, rows, fraction, arm, model, classes, synth)
    fp = fingerprint(**fp["parts"], pretrained=str(pretrained or ""), freeze=freeze)
    resume = reuse_or_start(run, fp, run / "checkpoints" / "last.ckpt", opts, "classifier")
    if resume is None:
        return {}
    extra = filtered_copies(prepared, rows, classes, cfg) if arm == "filters" else None
    real = arm_rows(rows, arm, classes)
    train_ds, val_ds, test_ds, n_synth = datasets(
        prepared, real, label_names, synth, extra, seen=rows
    )
    if arm == "synth_only":
        check_synthetic_positives(all_labels(train_ds), label_names, classes)
    # every arm takes as many optimizer steps per epoch as `none` (real rows only), unless the
    # config says otherwise: more images must not also mean more training
    # (the loaders drop a last partial batch, so `none` takes len(rows) // batch steps)
    steps = max(1, len(rows) // c["batch_size"]) if c["equal_steps"] else None
    where = {"fraction": fraction, "arm": arm, "model": model, "classes": classes}
    open_run(
        run, fp, {**cfg, "run": {**where, "synth": [str(s) for s in synth], "data": str(rec.root)}}
    )
    pl.seed_everything(c["seed"], workers=True, verbose=False)
    pos_weight = (
        positive_weights(all_labels(train_ds)) if c["pos_weight"] and task == "multilabel" else None
    )
    module = build_module(
        cfg, label_names, task, arm, model, pretrained, freeze, pos_weight, classes
    )
    gen = torch.Generator().manual_seed(c["seed"])
    if c["balanced_sampling"]:
        w = torch.from_numpy(balanced_weights(all_labels(train_ds)))
        loader = DataLoader(
            train_ds,
            c["batch_size"],
            sampler=WeightedRandomSampler(w, len(w), generator=gen),
            num_workers=c["num_workers"],
            drop_last=len(train_ds) > c["batch_size"],
        )
    else:
        loader = DataLoader(
            train_ds,
            c["batch_size"],
            shuffle=True,
            generator=gen,
            num_workers=c["num_workers"],
            drop_last=len(train_ds) > c["batch_size"],
        )
    monitor = selection_metric(c["monitor"], classes)
    mode = "min" if monitor.endswith("loss") else "max"
    best = AtomicModelCheckpoint(run / "checkpoints", filename="best", monitor=monitor, mode=mode)
    # last.ckpt after every epoch, improved or not, so a crash loses at most the current epoch
    latest = AtomicModelCheckpoint(
        run / "checkpoints", filename="last", enable_version_counter=False
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        max_epochs=c["epochs"],
        limit_train_batches=steps,
        precision=precision(accelerator, c["precision"]),
        callbacks=[
            best,
            pl.callbacks.EarlyStopping(
                monitor, patience=c["patience"], mode=mode, check_finite=False
            ),
            latest,
            *([] if progress else [EpochLines(monitor)]),
        ],
        logger=loggers(run),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=5,
        num_sanity_val_steps=0,
        deterministic="warn",
    )
    last = run / "checkpoints" / "last.ckpt"
    trainer.fit(
        module, loader, DataLoader(val_ds, c["batch_size"]), ckpt_path=str(last) if resume else None
    )
    if trainer.global_rank != 0:
        return {}
    best_path = best.best_model_path or str(last)
    module = Classifier.load_from_checkpoint(best_path, map_location=run_device(), pretrained=None)
    test = prepared.split("test").frame
    val = (prepared.split("val").frame, val_ds)  # per-label thresholds are chosen on val
    preds, metrics = evaluate(module, test, test_ds, label_names, task, cfg, val=val)
    metrics.update(
        {
            "fraction": fraction,
            "arm": arm,
            "model": model,
            "n_train_real": len(real),
            "n_train_patients": int(rows["patient"].nunique()),
            "n_train_synthetic": n_synth,
            "best_checkpoint": Path(best_path).name,
            "best_val": float(best.best_model_score or np.nan),
            "epochs_run": trainer.current_epoch,
            "optimizer_steps": int(trainer.global_step),
            "selection_metric": monitor,
            "steps_per_epoch_limit": steps,
        }
    )
    preds.to_csv(run / "predictions.csv", index=False)
    seen_images(prepared, rows).to_csv(run / "train_val_ids.csv", index=False)
    write_json(run / "metrics.json", metrics)
    outputs(run, module, test, test_ds, preds, metrics, label_names, task, classes, prepared)
    mark_done(run, {"macro_auc": metrics["auc"]["macro"]["auc"]})
    return metrics


def outputs(
    run, module, test, test_ds, preds, metrics, label_names, task, classes, prepared
) -> None:
    """ROC curves, confusion matrix, prediction grid and Grad-CAM overlays for the rare classes."""
    from pipelines.classifier import plots as cp

    y = preds[label_names].to_numpy(np.float64)
    scores = preds[[f"score:{n}" for n in label_names]].to_numpy()
    cp.roc_curves(run / "roc_curves.png", y, scores, label_names, highlight=classes)
    cp.reliability_png(run / "calibration.png", y, scores, label_names, N_BINS)
    if task != "multilabel":
        cm = np.asarray(metrics["confusion"]["data"])
        cp.confusion_png(run / "confusion.png", cm, label_names, "test confusion matrix")
        dist = metrics["distribution"]
        cp.label_distribution_png(
            run / "label_distribution.png",
            [dist[n]["true_n"] for n in label_names],
            [dist[n]["pred_n"] for n in label_names],
            label_names,
            "test: true vs predicted",
        )
    images = prepared.store.view[test["row"].to_numpy()[:32]]
    top = scores[:32].argmax(axis=1)
    if task == "multilabel":
        truth = [
            ", ".join(n for n, v in zip(label_names, row, strict=True) if v > 0.5) or "none"
            for row in y[:32]
        ]
        correct = [y[i, top[i]] > 0.5 for i in range(len(top))]
    else:
        truth = [label_names[int(np.nanargmax(row))] for row in y[:32]]
        correct = [label_names[t] == tr for t, tr in zip(top, truth, strict=True)]
    cp.prediction_grid(
        run / "test_predictions.png",
        images,
        truth,
        [label_names[t] for t in top],
        correct,
        "test images: predicted / true",
    )
    for cls in classes:
        j = label_names.index(cls)
        pos = np.flatnonzero(y[:, j] > 0.5)
        pick = pos[np.argsort(-scores[pos, j])][:8]
        if len(pick):
            cp.gradcam_grid(
                run / f"gradcam_{cls.replace(' ', '_')}.png",
                module.model,
                prepared.store.view[test["row"].to_numpy()[pick]],
                j,
                lambda x: module.preprocess(x),
                f"Grad-CAM: top-scored {cls} test positives",
            )

"""A classifier run on disk: train on a fraction (+ synthetic rows), select on val, evaluate once on
test (what each arm trains on: pipelines.classifier.arms; the evaluation: .evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from classify import MODELS, Classifier
from pipelines.arms import RATIO_ARMS, START_FROM_ARM, sweep_only
from pipelines.classifier.arms import (
    AUGMENT_ARMS,
    SYNTH_ARMS,
    all_labels,
    arm_rows,
    balanced_weights,
    check_arm,
    check_synthetic_positives,
    datasets,
    filtered_copies,
    train_rows,
)
from pipelines.classifier.evaluation import evaluate, seen_images
from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.fingerprints import (
    RunOptions,
    fingerprint,
    frame_id,
    open_run,
    reuse_or_start,
    run_id,
)
from pipelines.machine import mixed_precision, run_device
from pipelines.runs import loggers, mark_done, save_checkpoint_atomic, write_json


class AtomicModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, saving to a temp file renamed when whole: no half-written file."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        parent = super()._save_checkpoint
        save_checkpoint_atomic(trainer, Path(filepath), lambda tmp: parent(trainer, str(tmp)))
        self._last_checkpoint_saved = filepath


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
    """What makes a classifier run (less local weights): config (less num_workers, which cannot
    change results), data (and its pixels), exact train rows, arm, model, the classes it studies
    (they choose the checkpoint and stop early), the synthetic sets' ids and, for the filters arm,
    its filter bank; `parts` for extra keys."""
    parts = dict(
        classify={k: v for k, v in cfg["classify"].items() if k != "num_workers"},
        data=prepared.data_id,
        pixels=prepared.store.pixel_key,
        classes=list(classes),
        train=frame_id(arm_rows(rows, arm, classes), ["image_id"]),
        fraction=float(fraction),
        arm=arm,
        model=model,
        synth=[run_id(s) for s in synth],
        filters=cfg["filters"] if arm == "filters" else {},
        filter_classes=classes if arm == "filters" else [],
        **({"ratio_grid": list(cfg["compare"]["ratio_grid"])} if arm in RATIO_ARMS else {}),
    )
    return {**fingerprint(**parts, pretrained="", freeze=0), "parts": parts}


def start_weights(module: Classifier, checkpoint: Path) -> None:
    """Load another classifier run's weights (its Lightning checkpoint) into `module`; a user error
    when the checkpoint is of another model or labels."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    except (OSError, KeyError, RuntimeError) as err:
        raise RareganError(
            f"cannot start from classifier checkpoint {checkpoint} ({type(err).__name__}): it must "
            "be a finished run of the same model and labels"
        ) from None


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
    start_from: Path | None = None,
) -> dict:
    """Train, select on val, evaluate once on test; write the run folder and return its metrics.

    `start_from` (the arms of START_FROM_ARM): the best checkpoint of another classifier run of
    the same model and labels whose weights this one starts from (named in its fingerprint by that
    run's). A finished or interrupted run is reused only when its fingerprint matches (`redo`:
    replaced)."""
    opts = opts or RunOptions()
    progress = opts.progress
    devices, strategy, accelerator = opts.devices, opts.strategy, opts.accelerator
    check_arm(arm)
    run, classes, synth = Path(run), list(classes or []), list(synth or [])
    if arm in RATIO_ARMS:
        raise RareganError(sweep_only(arm))
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
    if (arm in START_FROM_ARM) != (start_from is not None):
        raise RareganError(
            sweep_only(arm)
            if arm in START_FROM_ARM
            else f"only the {', '.join(START_FROM_ARM)} arm starts from another classifier"
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
    started = {"start_from": run_id(Path(start_from).parents[1])} if start_from else {}
    fp = fingerprint(**fp["parts"], pretrained=str(pretrained or ""), freeze=freeze, **started)
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
    if start_from is not None and not resume:
        start_weights(module, Path(start_from))
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
            "precision": str(trainer.precision),  # resolved: auto is bf16 only where native
        }
    )
    preds.to_csv(run / "predictions.csv", index=False)
    seen_images(prepared, rows).to_csv(run / "train_val_ids.csv", index=False)
    write_json(run / "metrics.json", metrics)
    from pipelines.classifier.figures import run_figures  # matplotlib loads when figures are drawn

    run_figures(run, module, test, preds, metrics, label_names, task, classes, prepared)
    mark_done(run, {"macro_auc": metrics["auc"]["macro"]["auc"]})
    return metrics

"""A GAN training run on disk: a class's train positives → filter bank → PGGAN, resumable, with samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import yaml

from pggan import PGGAN
from pggan.augment import parse_policy
from pggan.networks import check_architecture
from pipelines.data.prefilter import expand
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
from pipelines.gan.data_order import DataOrder, class_repeats, loader
from pipelines.gan.outputs import (
    CKPT,
    HELDOUT,
    POSITIVES,
    PhaseLines,
    RunOutputs,
    ScheduleBar,
    loss_curve,
    read_checkpoint,
    sample_grid,
)
from pipelines.gan.transfer import check_source_images, start_from, transfer_source
from pipelines.machine import mixed_precision
from pipelines.runs import loggers, mark_done, merged_logs, write_json

GENERATOR = "generator_ema.pt"


def gan_precision(accelerator: str, setting: str) -> str:
    """The dtype of the GAN's forward passes ("bf16" or "32") for gan.precision on this machine.

    bf16 autocast where it is native: GPUs that compute bf16 (Ampere on) and CPUs with AVX512-BF16
    or AMX; fp16 is never chosen (it would need loss scaling, the penalty's input gradient
    included). bf16 asked for on a CPU without it: one warning line, fp32.
    """
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    choice = mixed_precision(accelerator, setting, "gan.precision", "bf16" if gpu_bf16 else "32")
    return "bf16" if choice == "bf16" else "32"


def augment_on(augment: dict) -> bool:
    """Whether a gan.augment section changes training (a policy, and p > 0 or adaptive)."""
    return bool(parse_policy(augment["policy"])) and (augment["p"] > 0 or augment["adaptive"])


def gan_module(cfg: dict, label_dim: int = 0, precision: str | None = None) -> PGGAN:
    """The PGGAN Lightning module the config's gan section describes; `precision` is the resolved
    "bf16" or "32" (default: gan.precision resolved for the default accelerator)."""
    g = cfg["gan"]
    try:
        n_levels = check_architecture(g["resolution"], g["channels"])
    except (TypeError, ValueError) as err:
        raise RareganError(f"gan config: {err}; e.g. resolution 64 with 5 channel widths") from None
    if g["freeze_d"] and g["init_from"] is None:
        raise RareganError("gan.freeze_d needs a GAN to fine-tune (gan.init_from)")
    if g["freeze_d"] >= n_levels:
        raise RareganError(
            f"gan.freeze_d {g['freeze_d']} freezes every level of D ({n_levels} at {g['resolution']} px); "
            f"use 0 to {n_levels - 1}"
        )
    aug = g["augment"]
    return PGGAN(
        resolution=g["resolution"],
        channels=list(g["channels"]),
        latent_dim=g["latent_dim"],
        label_dim=label_dim,
        kimg_per_phase=g["kimg_per_phase"],
        final_kimg=g["final_kimg"],
        lr=g["lr"],
        batch_per_resolution={
            r: b for r, b in g["batch_per_resolution"].items() if r <= g["resolution"]
        },
        gp_lambda=g["gp_lambda"],
        drift=g["drift"],
        ema_beta=g["ema_beta"],
        seed=g["seed"],
        augment_policy=",".join(parse_policy(aug["policy"])),
        augment_p=aug["p"],
        augment_adaptive=aug["adaptive"],
        augment_target=aug["target"],
        augment_speed_kimg=aug["speed_kimg"],
        precision=precision or gan_precision("auto", g["precision"]),
        freeze_d=g["freeze_d"],
        ema_continue=g["ema_continue"],
        resample=g["resample"],
    )


def as_classes(classes: str | list[str]) -> list[str]:
    """One class name or several, as a list without repeats (several → one GAN of them all)."""
    out = [classes] if isinstance(classes, str) else list(dict.fromkeys(classes))
    if not out:
        raise RareganError("give at least one class for the GAN")
    return out


def check_condition_on(names: list[str], studied: list[str], condition_on) -> None:
    """Refuse (one line) a class to condition a GAN on that the data lacks or that is studied."""
    for cls in (*studied, *condition_on):
        if cls not in names:
            raise RareganError(f"unknown class {cls!r}; this data has {', '.join(names)}")
    for cls in condition_on:
        if cls in studied:
            raise RareganError(
                f"--condition-on names {cls!r}, a class the GAN is for: name other classes"
            )


def class_tag(classes: list[str]) -> str:
    """Classes as one folder-name part: spaces to underscores, joined by '+'."""
    return "+".join(cls.replace(" ", "_") for cls in classes)


def training_images(
    prepared: Prepared, classes: str | list[str], fraction: float, cfg: dict, section: str = "gan"
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The train positives of the fraction, their filter-bank expansion (uint8) and its condition labels.

    With several classes the rows are the union of each class's positives and the labels (one
    column per class, 1/0) say which of the classes each image shows; with one class they are all 1.
    `section` is the config section of the generator that learns them (its resolution).
    """
    resolution = cfg[section]["resolution"]
    if prepared.store.size != resolution:
        raise RareganError(
            f"the data store holds {prepared.store.size} px images but {section}.resolution is "
            f"{resolution}; run with --size equal to the generator's resolution"
        )
    classes = as_classes(classes)
    parts = [prepared.positives(cls, fraction, cfg["data"]["seed"]) for cls in classes]
    for cls, part in zip(classes, parts, strict=True):
        if len(part) < (least := cfg[section]["min_images"]):
            raise RareganError(
                f"class {cls!r} has only {len(part)} positive training images at fraction {fraction:g} %; "
                f"the generator needs at least {least} (use a larger fraction or another class)"
            )
    rows = pd.concat(parts).drop_duplicates("row").sort_values("row")
    images, _ = expand(prepared.store.array[rows["row"].to_numpy()], cfg)
    labels = condition_labels(rows, classes)
    return rows, images, np.tile(labels, (len(images) // len(rows), 1))


def heldout_positives(prepared: Prepared, classes: list[str], rows: pd.DataFrame) -> pd.DataFrame:
    """Val and test images positive for any of `classes`, of patients outside `rows` (never seen)."""
    frame = prepared.records.frame
    held = (
        frame["split"].isin(["val", "test"])
        & (frame[classes] > 0.5).any(axis=1)
        & ~frame["patient"].isin(rows["patient"])
    )
    return frame[held.to_numpy()]


def condition_labels(rows: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """(N, K) float32: 1 where a row is positive for the class (unknown counts as 0)."""
    return (rows[classes].to_numpy(dtype=np.float32) > 0.5).astype(np.float32)


def check_same_classes(run: Path, classes: list[str]) -> None:
    """A resumed run must learn the classes it started with."""
    saved = (
        yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    )
    before = (saved or {}).get("run", {}).get("classes")
    if before is not None and list(before) != classes:
        raise RareganError(
            f"{run} was started for classes {before}, not {classes}; resume with the same --class"
        )


def is_conditional(cfg: dict, classes: list[str]) -> bool:
    """Whether a GAN of `classes` is label-conditional: several classes, unless gan.conditional is
    false (their images pooled, no labels)."""
    return len(classes) > 1 and cfg["gan"]["conditional"]


def require_conditional(cfg: dict, command: str) -> None:
    """Refuse (one line) gan.conditional false where a GAN of several classes must label its images."""
    if not cfg["gan"]["conditional"]:
        raise RareganError(
            f"gan.conditional false pools a GAN's classes without labels, so {command} could not "
            "tell which class its images are; it is for transfer sources (raregan gan --unconditional)"
        )


def class_balance(cfg: dict, classes: list[str]) -> float:
    """The gan.class_balance a GAN of `classes` trains with: 0 for one class (nothing to balance)."""
    return cfg["gan"]["class_balance"] if len(classes) > 1 else 0.0


def gan_fingerprint(
    prepared: Prepared,
    cfg: dict,
    classes: list[str],
    fraction: float,
    rows: pd.DataFrame,
    precision: str = "32",
    source_id: str | None = None,
) -> dict:
    """What makes a GAN: its config (less the checkpoint interval), the filter bank, the data, the
    classes, the fraction and the exact positives it learns from.

    The augment section counts only when it augments, the class balance only when a GAN of
    several classes balances, gan.conditional only when false for several classes, the resolved
    precision only when bf16, gan.resample only when not nearest, and the GAN it starts from (by
    its fingerprint: `source_id` when given, else read from its run; gan.ema_continue when true)
    only when it fine-tunes one:
    runs without them keep the fingerprints they had before these settings existed.
    """
    skip = ("checkpoint_every_kimg", "keep_checkpoints", "augment", "precision", "class_balance")
    skip += ("init_from", "freeze_d", "ema_continue", "conditional", "resample")
    gan = {k: v for k, v in cfg["gan"].items() if k not in skip}
    if augment_on(cfg["gan"]["augment"]):
        policy = ",".join(parse_policy(cfg["gan"]["augment"]["policy"]))
        gan["augment"] = {**cfg["gan"]["augment"], "policy": policy}
    if precision == "bf16":
        gan["precision"] = precision
    if balance := class_balance(cfg, classes):
        gan["class_balance"] = balance
    if cfg["gan"]["resample"] != "nearest":
        gan["resample"] = cfg["gan"]["resample"]
    if len(classes) > 1 and not is_conditional(cfg, classes):
        gan["conditional"] = False
    if cfg["gan"]["init_from"] is not None:  # what it starts from, not where that lies
        source_id = source_id or run_id(transfer_source(cfg))
        gan.update(init_from=source_id, freeze_d=cfg["gan"]["freeze_d"])
        if cfg["gan"]["ema_continue"]:
            gan["ema_continue"] = True
    return fingerprint(
        gan=gan,
        filters=cfg.get("filters", {}),
        classes=classes,
        fraction=float(fraction),
        data=prepared.data_id,
        pixels=prepared.store.pixel_key,
        positives=frame_id(rows, ["image_id"]),
    )


def train_gan(
    prepared: Prepared,
    classes: str | list[str],
    fraction: float,
    cfg: dict,
    run: Path,
    opts: RunOptions | None = None,
    checkpoint_every: float | None = None,
) -> Path:
    """Train (or resume) the GAN of a class and fraction in `run`; returns the run folder.

    Several classes train one label-conditional GAN on the union of their positives (one GAN of
    them pooled, without labels, when gan.conditional is false). A finished
    or interrupted run is reused only when its fingerprint matches (`redo`: replaced otherwise).
    Checkpoints come every `checkpoint_every` kimg; by default every gan.checkpoint_every_kimg but
    at least five times per schedule. A resume continues exactly: schedule, optimizers, EMA, the
    data order and the per-step random draws.
    """
    opts = opts or RunOptions()
    progress = opts.progress
    devices, strategy, accelerator = opts.devices, opts.strategy, opts.accelerator
    run = Path(run)
    classes = as_classes(classes)
    conditional = is_conditional(cfg, classes)
    ckpt = run / CKPT
    rows, images, labels = training_images(prepared, classes, fraction, cfg)
    if (source := transfer_source(cfg)) is not None:
        check_source_images(source, prepared, fraction, cfg["data"]["seed"])
    precision = gan_precision(accelerator, cfg["gan"]["precision"])
    fp = gan_fingerprint(prepared, cfg, classes, fraction, rows, precision)
    resume = reuse_or_start(run, fp, ckpt, opts, "GAN")
    if resume is None:
        return run
    if resume:
        check_same_classes(run, classes)
    pl.seed_everything(cfg["gan"]["seed"], workers=True, verbose=False)
    module = gan_module(cfg, len(classes) if conditional else 0, precision)  # validates first
    if source is not None and not resume:
        start_from(module, source)
    rec = prepared.records
    where = {"classes": classes, "fraction": fraction, "data": str(rec.root), "source": rec.source}
    open_run(run, fp, {**cfg, "run": where})
    keep = ["image_id", "patient", "path", *prepared.records.label_names]
    rows[keep].to_csv(run / POSITIVES, index=False)
    heldout_positives(prepared, classes, rows)[keep].to_csv(run / HELDOUT, index=False)
    seed = cfg["gan"]["seed"]
    repeats = class_repeats(labels, class_balance(cfg, classes))
    data = loader(images, module.schedule.max_batch, seed, labels if conditional else None, repeats)
    every = checkpoint_every or min(
        cfg["gan"]["checkpoint_every_kimg"], module.schedule.total_images / 5000
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        max_epochs=-1,
        max_steps=-1,  # the module stops the trainer when its schedule ends
        logger=loggers(run),
        callbacks=[
            RunOutputs(run, every, seed=seed, keep=cfg["gan"]["keep_checkpoints"]),
            DataOrder(data.sampler),
            ScheduleBar() if progress else PhaseLines(),
        ],
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=5,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the sampler gives each rank its slice itself
    )
    if resume:
        read_checkpoint(ckpt)  # a damaged checkpoint: a user error, not a traceback
    trainer.fit(module, data, ckpt_path=str(ckpt) if resume else None)
    if not module.phase.done:
        raise RareganError(
            f"GAN training in {run} stopped before the schedule ended; resume with --resume"
        )
    if trainer.global_rank == 0:
        rec = prepared.records
        names = list(rec.label_names)
        finish(run, module, rows, images, classes, fraction, cfg, names, rec.task, conditional)
    return run


def finish(
    run: Path,
    module: PGGAN,
    rows: pd.DataFrame,
    images: np.ndarray,
    classes: list[str],
    fraction: float,
    cfg: dict,
    label_names: list[str],
    task: str = "multilabel",
    conditional: bool = False,
) -> None:
    """Final grid, loss curve, EMA generator weights and summary; DONE last."""
    sample_grid(module, run / "samples" / "final.png", 64, cfg["gan"]["seed"])
    losses = merged_logs(run)
    losses.to_csv(run / "losses.csv", index=False)
    if len(losses):
        loss_curve(losses, run / "loss_curve.png")
    torch.save(
        {"hparams": dict(module.hparams), "state_dict": module.G_ema.state_dict()}, run / GENERATOR
    )
    summary = {
        "class": " + ".join(classes),
        "classes": classes,
        "conditional": conditional,
        "fraction": fraction,
        "positives": len(rows),
        "training_images": len(images),
        "kimg": (module.images_seen - module.images_start) / 1000,  # trained in this run
        "steps": module.steps,
        "train_minutes": round(module.train_seconds / 60, 2),
        "label_names": label_names,
        "task": task,
    }
    if cfg["gan"]["init_from"] is not None:
        summary.update(init_from=str(cfg["gan"]["init_from"]), freeze_d=cfg["gan"]["freeze_d"])
    write_json(run / "summary.json", summary)
    mark_done(run, summary)

"""Training the diffusion kind: the Lightning module (ε-prediction, fp32 loss, AdamW, EMA weights,
per-step draws seeded by (seed, step)), its fingerprint, checkpoints, transfer source and the run
folder it leaves."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.fingerprints import (
    RunOptions,
    frame_id,
    open_run,
    reuse_or_start,
    run_id,
)
from pipelines.fingerprints import (
    fingerprint as make_fingerprint,
)
from pipelines.gan.outputs import CKPT, HELDOUT, POSITIVES
from pipelines.gan.run import as_classes, check_same_classes, heldout_positives, training_images
from pipelines.gan.transfer import check_source_images
from pipelines.generators.diffusion.net import (
    ARCHITECTURE,
    GENERATOR,
    SECTION,
    autocast,
    make_unet,
    noise_schedule,
    precision,
    read_diffusion_checkpoint,
)
from pipelines.generators.diffusion.outputs import Checkpoints, StepLines, sample_grid
from pipelines.runs import (
    is_done,
    loggers,
    mark_done,
    merged_logs,
    write_json,
)

# (sample_steps counts: the run's sampler, saved with its weights, draws its samples with it)
NOT_FINGERPRINTED = ("checkpoint_every_kimg", "keep_checkpoints", "precision", "init_from")
# what a model of several classes is trained and sampled with: no part of a one-class run
CONDITIONING = ("conditional", "p_uncond", "guidance")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random draws of one training step, from (seed, step) alone: a resume repeats them."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def step_batch(
    images: torch.Tensor,
    hp: dict,
    step: int,
    rank: int = 0,
    world: int = 1,
    classes: torch.Tensor | None = None,
    label_dim: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Training step `step`'s images (in [-1, 1]), noise, timesteps and, for a class-conditional
    model (`classes`: each image's class index of `label_dim`), their class indices with a share
    diffusion.p_uncond replaced by the null class `label_dim` (classifier-free guidance's
    unconditional model), for rank `rank` of `world`: one batch of diffusion.batch_size drawn from
    (seed, step) alike on every rank, each rank its slice (DDP averages the gradients), so any
    device count trains on the same draws. The class draws come after the others: a one-class
    model draws exactly what it drew before they existed."""
    g = step_generator(hp["seed"], step)
    b = hp["batch_size"]
    pick = torch.randint(len(images), (b,), generator=g)
    noise = torch.randn((b, 1, *images.shape[-2:]), generator=g)
    t = torch.randint(0, hp["timesteps"], (b,), generator=g)
    y = None
    if classes is not None:
        drop = torch.rand(b, generator=g) < hp["p_uncond"]
        y = torch.where(drop, label_dim, classes[pick])[rank::world]
    pick, noise, t = pick[rank::world], noise[rank::world], t[rank::world]
    return images[pick].float().div(127.5).sub(1.0), noise, t, y


class Diffusion(pl.LightningModule):
    """A DDPM on uint8 images held in memory: ε-prediction, AdamW, EMA weights."""

    def __init__(
        self,
        hp: dict,
        total_steps: int,
        precision: str = "32",
        images: np.ndarray | None = None,
        class_names: list[str] | None = None,
        classes: np.ndarray | None = None,
    ):
        """`class_names`: a model conditioned on these classes (`classes`: each image's index
        in them), with one more embedding for the null class of classifier-free guidance."""
        super().__init__()
        self.save_hyperparameters("hp", "total_steps", "precision", "class_names")
        self.hp, self.class_names = hp, list(class_names or [])
        self.label_dim = len(self.class_names)
        self.unet = make_unet(hp, self.label_dim)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.schedule = noise_schedule(hp)
        self.images = None if images is None else torch.from_numpy(np.ascontiguousarray(images))
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.long)
        self.train_seconds = 0.0

    def training_step(self, batch, batch_idx):
        world, rank = self.trainer.world_size, self.global_rank
        x0, noise, t, y = step_batch(
            self.images, self.hp, self.global_step, rank, world, self.classes, self.label_dim
        )
        x0, noise, t = x0.to(self.device), noise.to(self.device), t.to(self.device)
        noisy = self.schedule.add_noise(x0, noise, t)
        with autocast(self.device, self.hparams.precision):
            if y is None:
                predicted = self.unet(noisy, t)
            else:
                predicted = self.unet(noisy, t, class_labels=y.to(self.device))
        loss = F.mse_loss(predicted.float(), noise)  # the loss in fp32
        self.log("loss", loss.detach(), on_step=True, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The step, then the average: both before any callback saves a checkpoint of this step.
        Timed whole (train_seconds): Lightning's closure runs training_step and the backward pass
        inside the optimizer's step; the callbacks' checkpoints and grids are not counted."""
        started = time.perf_counter()
        super().optimizer_step(*args, **kwargs)
        self.update_average()
        self.train_seconds += time.perf_counter() - started

    @torch.no_grad()
    def update_average(self) -> None:
        beta = self.hp["ema_beta"]
        for avg, now in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            avg.lerp_(now.detach(), 1.0 - beta)
        for avg, now in zip(self.ema.buffers(), self.unet.buffers(), strict=True):
            avg.copy_(now)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.unet.parameters(), lr=self.hp["lr"], weight_decay=0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["diffusion_state"] = {"train_seconds": self.train_seconds}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("diffusion_state", {})
        self.train_seconds = state.get("train_seconds", 0.0)


class Steps(torch.utils.data.Dataset):
    """Step numbers: the loader only paces the trainer (each step draws its own images)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def total_steps(hp: dict) -> int:
    """Training steps of diffusion.kimg thousand images at diffusion.batch_size."""
    return max(1, math.ceil(hp["kimg"] * 1000 / hp["batch_size"]))


def source_run(cfg: dict) -> Path | None:
    """The finished diffusion run diffusion.init_from names (None when unset); a user error unless
    it is one."""
    source = cfg[SECTION]["init_from"]
    if source is None:
        return None
    run = Path(source)
    if not is_done(run) or not (run / GENERATOR).is_file():
        raise RareganError(
            f"diffusion.init_from: {run} is not a finished diffusion run (it needs DONE and "
            f"{GENERATOR}); train the model to start from first"
        )
    from pipelines.generators import run_kind

    if run_kind(run) != "diffusion":
        raise RareganError(
            f"diffusion.init_from: {run} is a {run_kind(run)} run, not a diffusion one"
        )
    return run


def fingerprint(prepared, cfg, classes, fraction, rows, precision="32", source_id=None) -> dict:
    """What makes a diffusion run: its section (less how it is carried out), the filter bank, the
    data and its pixels, the classes, the fraction, the exact positives, the resolved precision
    when bf16, and the run it starts from (by its fingerprint); how several classes are
    conditioned on only where there are several."""
    hp = {k: v for k, v in cfg[SECTION].items() if k not in NOT_FINGERPRINTED}
    if len(classes) == 1:  # nothing to condition on (and one-class runs keep their fingerprints)
        hp = {k: v for k, v in hp.items() if k not in CONDITIONING}
    elif not hp["conditional"]:  # pooled: no labels to drop, none to guide by
        hp = {k: v for k, v in hp.items() if k not in ("p_uncond", "guidance")}
    if precision == "bf16":
        hp["precision"] = precision
    if cfg[SECTION]["init_from"] is not None:
        hp["init_from"] = source_id or run_id(Path(cfg[SECTION]["init_from"]))
    return make_fingerprint(
        generator="diffusion",
        diffusion=hp,
        filters=cfg.get("filters", {}),
        classes=list(classes),
        fraction=float(fraction),
        data=prepared.data_id,
        pixels=prepared.store.pixel_key,
        positives=frame_id(rows, ["image_id"]),
    )


def train(
    prepared: Prepared,
    classes: str | list[str],
    fraction: float,
    cfg: dict,
    run: Path,
    opts: RunOptions | None = None,
    checkpoint_every: float | None = None,
) -> Path:
    """Train (or resume) the diffusion model of the classes' train positives of the fraction (after
    the filter bank) in `run`; returns the run folder. A finished or interrupted run is reused only
    under the same fingerprint; a resume continues exactly (weights, EMA, optimizer, the per-step
    draws)."""
    opts = opts or RunOptions()
    run = Path(run)
    classes = as_classes(classes)
    hp = cfg[SECTION]
    rows, images, labels = training_images(prepared, classes, fraction, cfg, SECTION)
    conditional = len(classes) > 1 and hp["conditional"]
    index = class_index(rows, labels, classes) if conditional else None
    source = source_run(cfg)
    if source is not None:
        check_source_images(source, prepared, fraction, cfg["data"]["seed"])
    resolved = precision(opts.accelerator, hp["precision"])
    ranks = opts.devices if isinstance(opts.devices, int) else 1
    if hp["batch_size"] % max(1, ranks):
        raise RareganError(
            f"diffusion.batch_size {hp['batch_size']} does not split over {ranks} devices; give a "
            "multiple of the device count"
        )
    fp = fingerprint(prepared, cfg, classes, fraction, rows, resolved)
    ckpt = run / CKPT
    resume = reuse_or_start(run, fp, ckpt, opts, "diffusion")
    if resume is None:
        return run
    if resume:
        check_same_classes(run, classes)
    pl.seed_everything(hp["seed"], workers=True, verbose=False)
    steps = total_steps(hp)
    module = Diffusion(dict(hp), steps, resolved, images, classes if conditional else None, index)
    if source is not None and not resume:
        start_from_source(module, source)
    rec = prepared.records
    where = {"classes": classes, "fraction": fraction, "data": str(rec.root), "source": rec.source}
    open_run(run, fp, {**cfg, "generator": {"kind": "diffusion"}, "run": where})
    keep = ["image_id", "patient", "path", *rec.label_names]
    rows[keep].to_csv(run / POSITIVES, index=False)
    heldout_positives(prepared, classes, rows)[keep].to_csv(run / HELDOUT, index=False)
    every = max(1, round(hp["checkpoint_every_kimg"] * 1000 / hp["batch_size"]))
    every = min(every, max(1, steps // 5))  # by default at least five checkpoints per run
    if checkpoint_every:
        every = max(1, round(checkpoint_every * 1000 / hp["batch_size"]))
    trainer = pl.Trainer(
        accelerator=opts.accelerator,
        devices=opts.devices,
        strategy=opts.strategy,
        max_epochs=-1,
        max_steps=steps,
        logger=loggers(run),
        callbacks=[Checkpoints(run, every, hp["keep_checkpoints"])]
        + ([] if opts.progress else [StepLines()]),
        enable_checkpointing=False,
        enable_progress_bar=opts.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    loader = torch.utils.data.DataLoader(Steps(steps), batch_size=None, shuffle=False)
    if resume:
        read_diffusion_checkpoint(ckpt)
    trainer.fit(module, loader, ckpt_path=str(ckpt) if resume else None)
    if trainer.global_step < steps:
        raise RareganError(f"diffusion training in {run} stopped early; resume with --resume")
    if trainer.global_rank == 0:
        finish(run, module, rows, images, classes, fraction, cfg, list(rec.label_names), rec.task)
    return run


def class_index(rows, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """Each training image's class (its index in `classes`); a user error when an image is
    positive for several of them (a class embedding takes one class per image)."""
    several = labels[: len(rows)].sum(axis=1) != 1
    if several.any():
        first = rows["image_id"].iloc[int(np.flatnonzero(several)[0])]
        raise RareganError(
            f"{int(several.sum())} training images are positive for several of {', '.join(classes)} "
            f"(e.g. {first}); the class-conditional diffusion model takes one class per image: "
            "train one model per class, or pool them with --set diffusion.conditional=false"
        )
    return labels.argmax(axis=1)


def start_from_source(module: Diffusion, source: Path) -> None:
    """Both the trained weights and their average start from the source's averaged weights."""
    saved = torch.load(source / GENERATOR, map_location="cpu", weights_only=False)
    theirs = {k: v for k, v in saved["hparams"].items() if k in ARCHITECTURE}
    mine = {k: module.hp[k] for k in ARCHITECTURE}
    if theirs != mine:
        raise RareganError(
            f"diffusion.init_from: {source} has another architecture ({theirs}) than this run "
            f"({mine}); give one of the same diffusion.channels, levels and timesteps"
        )
    theirs_classes = (
        json.loads((source / "summary.json").read_text())["classes"]
        if saved.get("label_dim", 0)
        else None
    )
    if theirs_classes is not None and theirs_classes != module.class_names:
        raise RareganError(
            f"diffusion.init_from: {source} is conditioned on {', '.join(theirs_classes)}, "
            f"this run on {', '.join(module.class_names) if module.label_dim else 'no class'}; "
            "start from a model of the same classes, of one class or of pooled ones"
        )
    for net in (module.unet, module.ema):  # a new class embedding starts from its initialization
        missing, extra = net.load_state_dict(saved["state_dict"], strict=False)
        if extra or any(not key.startswith("class_embedding.") for key in missing):
            raise RareganError(
                f"diffusion.init_from: {source}'s weights do not fit this model "
                f"(missing {missing[:3]}, unexpected {extra[:3]})"
            )


def finish(run, module, rows, images, classes, fraction, cfg, label_names, task) -> None:
    """Averaged weights, a sample grid, the loss log and the summary; DONE last."""
    hp, label_dim = dict(module.hp), module.label_dim
    saved = {"hparams": hp, "state_dict": module.ema.state_dict()}
    torch.save({**saved, "label_dim": label_dim} if label_dim else saved, run / GENERATOR)
    sample_grid(module.ema, hp, run / "samples" / "final.png", label_dim=label_dim)
    losses = merged_logs(run)
    losses.to_csv(run / "losses.csv", index=False)
    summary = {
        "generator": "diffusion",
        "class": " + ".join(classes),
        "classes": classes,
        "conditional": bool(label_dim),
        "fraction": fraction,
        "positives": len(rows),
        "training_images": len(images),
        "kimg": module.global_step * hp["batch_size"] / 1000,  # trained in this run
        "steps": module.global_step,
        "train_minutes": round(module.train_seconds / 60, 2),
        "label_names": label_names,
        "task": task,
    }
    if hp["init_from"] is not None:
        summary["init_from"] = str(hp["init_from"])
    write_json(run / "summary.json", summary)
    mark_done(run, summary)

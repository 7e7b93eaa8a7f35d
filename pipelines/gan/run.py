"""A GAN training run on disk: a class's train positives → filter bank → PGGAN, resumable, with samples."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from torch.utils.data import DataLoader, Sampler, TensorDataset

from pggan import PGGAN, fixed_latents, make_grid_uint8, to_uint8
from pggan.augment import parse_policy
from pggan.networks import check_architecture
from pipelines.data.prefilter import expand
from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.images import save_png
from pipelines.runs import (
    RunOptions,
    fingerprint,
    frame_id,
    loggers,
    mark_done,
    merged_logs,
    mixed_precision,
    open_run,
    reuse_or_start,
    save_checkpoint_atomic,
    write_json,
)

CKPT = "checkpoints/last.ckpt"
DATA_ORDER = "data_order"  # the checkpoint's entry for the sampler's position
GENERATOR = "generator_ema.pt"
POSITIVES = "positives.csv"
HELDOUT = "heldout.csv"  # the classes' val and test positives: real images the GAN never saw


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
        check_architecture(g["resolution"], g["channels"])
    except (TypeError, ValueError) as err:
        raise RareganError(f"gan config: {err}; e.g. resolution 64 with 5 channel widths") from None
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
    )


def as_classes(classes: str | list[str]) -> list[str]:
    """One class name or several, as a list without repeats (several → a label-conditional GAN)."""
    out = [classes] if isinstance(classes, str) else list(dict.fromkeys(classes))
    if not out:
        raise RareganError("give at least one class for the GAN")
    return out


def class_tag(classes: list[str]) -> str:
    """Classes as one folder-name part: spaces to underscores, joined by '+'."""
    return "+".join(cls.replace(" ", "_") for cls in classes)


def training_images(
    prepared: Prepared, classes: str | list[str], fraction: float, cfg: dict
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The train positives of the fraction, their filter-bank expansion (uint8) and its condition labels.

    With several classes the rows are the union of each class's positives and the labels (one
    column per class, 1/0) say which of the classes each image shows; with one class they are all 1.
    """
    g = cfg["gan"]
    if prepared.store.size != g["resolution"]:
        raise RareganError(
            f"the data store holds {prepared.store.size} px images but gan.resolution is {g['resolution']}; "
            "run with --size equal to the GAN resolution"
        )
    classes = as_classes(classes)
    parts = [prepared.positives(cls, fraction, cfg["data"]["seed"]) for cls in classes]
    for cls, part in zip(classes, parts, strict=True):
        if len(part) < g["min_images"]:
            raise RareganError(
                f"class {cls!r} has only {len(part)} positive training images at fraction {fraction:g} %; "
                f"the GAN needs at least {g['min_images']} (use a larger fraction or another class)"
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


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableSampler(Sampler[int]):
    """Endless shuffled passes over `n` items; pass e's order is a pure function of (seed, e).

    The stream is cut into global batches of `batch` items per rank (rank r takes the r-th slice),
    and `position` (items all ranks consumed) restores the exact order after a resume.
    """

    def __init__(self, n: int, batch: int, seed: int):
        super().__init__()
        self.n, self.batch, self.seed = n, batch, seed
        self.position = 0

    def order(self, epoch: int) -> list[int]:
        """The item order of pass `epoch`."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        """Items from `position` on, this rank's slice of each global batch."""
        rank, world = rank_and_world()
        start, epoch, order = self.position + rank * self.batch, -1, []
        while True:
            for pos in range(start, start + self.batch):
                if pos // self.n != epoch:
                    epoch = pos // self.n
                    order = self.order(epoch)
                yield order[pos % self.n]
            start += world * self.batch

    def state(self, position: int) -> dict:
        """The pass and index within it at stream `position`."""
        return {"epoch": position // self.n, "index": position % self.n}

    def load_state(self, state: dict) -> None:
        """Continue from a saved pass and index."""
        self.position = state["epoch"] * self.n + state["index"]


class DataOrder(pl.Callback):
    """Saves the sampler's position in each checkpoint and restores it on resume."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        """Every step consumed one batch per rank."""
        items = module.steps * trainer.world_size * self.sampler.batch
        checkpoint[DATA_ORDER] = self.sampler.state(items)

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        """Restore the position (from the step count for checkpoints made before it was saved)."""
        steps = checkpoint["pggan_state"]["steps"]
        old = self.sampler.state(steps * trainer.world_size * self.sampler.batch)
        self.sampler.load_state(checkpoint.get(DATA_ORDER, old))


def loader(
    images: np.ndarray, batch: int, seed: int, labels: np.ndarray | None = None
) -> DataLoader:
    """Endless loader of [-1, 1] float batches (with their labels if given) in a resumable order."""
    tensors = [torch.from_numpy(np.ascontiguousarray(images))]
    if labels is not None:
        tensors.append(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)))
    data = TensorDataset(*tensors)
    sampler = ResumableSampler(len(data), batch, seed)

    def collate(items):
        x = torch.stack([it[0] for it in items]).float().div_(127.5).sub_(1.0)
        return x if labels is None else (x, torch.stack([it[1] for it in items]))

    return DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=True)


def check_checkpoint(path: Path) -> None:
    """A user error unless `path` is a readable PGGAN checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: torch raises many kinds
        raise RareganError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}); delete it and start over"
        ) from None
    if not isinstance(state, dict) or "pggan_state" not in state or "state_dict" not in state:
        raise RareganError(f"{path} is not a raregan GAN checkpoint; delete it and start over")


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


class ScheduleBar(TQDMProgressBar):
    """Lightning's bar over the GAN schedule: kimg of the total, phase, resolution, alpha, losses, ETA."""

    BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]"

    def on_train_start(self, trainer, module) -> None:
        """A bar from the kimg shown so far (after a resume too) to the end of the schedule."""
        self.train_progress_bar = Tqdm(
            total=module.schedule.total_images / 1000,
            initial=module.images_seen / 1000,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer, *_) -> None:
        """Nothing: the loader is endless, its passes mean nothing to users."""

    def on_train_epoch_end(self, trainer, module) -> None:
        """Nothing: the bar ends with the schedule."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        """Move to the images shown; name the phase, resolution, alpha and losses."""
        if not self._should_update(batch_idx + 1, 0):
            return
        phase, bar = module.phase, self.train_progress_bar
        n_phases = module.schedule.n_phases
        bar.set_description(
            f"phase {phase.index + 1}/{n_phases} {phase.name} {phase.resolution} px", refresh=False
        )
        post = {"alpha": f"{phase.alpha:.2f}"}
        post.update({k: f"{v.item():.3f}" for k, v in (outputs or {}).items()})
        bar.set_postfix(post, refresh=False)
        bar.n = min(module.images_seen / 1000, bar.total)
        bar.refresh()


class PhaseLines(pl.Callback):
    """One plain line per phase on stdout (for --no-progress): phase, resolution, kimg, mean losses."""

    def on_train_start(self, trainer, module) -> None:
        """Start the first phase's tally."""
        self.start(module)

    def start(self, module) -> None:
        """Tally a phase from the current image count."""
        self.phase, self.kimg = module.phase, module.images_seen / 1000
        self.sums, self.count = {}, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        """Add the step's losses (on device, no sync); print the line when the phase ends."""
        if not outputs:  # no step: the schedule had already ended
            return
        for key, value in outputs.items():
            self.sums[key] = self.sums.get(key, 0) + value
        self.count += 1
        if module.phase.index == self.phase.index and not module.phase.done:
            return
        if trainer.is_global_zero:
            p, n = self.phase, module.schedule.n_phases
            losses = ", ".join(f"{k} {float(v) / self.count:.3f}" for k, v in self.sums.items())
            print(
                f"phase {p.index + 1}/{n} {p.name} {p.resolution} px: "
                f"kimg {self.kimg:.2f}-{module.images_seen / 1000:.2f}, {losses}",
                flush=True,
            )
        self.start(module)


class RunOutputs(pl.Callback):
    """Checkpoints every N kimg (atomic) and at the end, sample grids at each phase end and checkpoint.

    Each periodic checkpoint is last.ckpt plus a kimg-stamped hard link to it (no copy); only the
    newest `keep` stamped ones stay, so a paper-scale run never piles up checkpoints on disk."""

    def __init__(
        self, run: Path, every_kimg: float, n_grid: int = 32, seed: int = 0, keep: int = 3
    ):
        self.run, self.every = Path(run), max(1, int(every_kimg * 1000))
        self.n_grid, self.seed, self.keep = n_grid, seed, keep

    def on_fit_start(self, trainer, module) -> None:
        """Remember where in the schedule this fit starts (after a resume, too)."""
        self.next_ckpt = (module.images_seen // self.every + 1) * self.every
        self.phase_index = module.phase.index

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        """Write a grid when a phase ends and a checkpoint every N kimg."""
        phase = module.phase
        if phase.index != self.phase_index or phase.done:
            self.grid(module, f"phase{self.phase_index:02d}")
            self.phase_index = phase.index
        if module.images_seen >= self.next_ckpt and not phase.done:
            save_checkpoint_atomic(trainer, self.run / CKPT)
            if trainer_rank(module) == 0:
                self.stamp(module.images_seen)
            self.grid(module, f"kimg{module.images_seen / 1000:08.2f}")
            self.next_ckpt = (module.images_seen // self.every + 1) * self.every

    def on_train_end(self, trainer, module) -> None:
        """The final state (G, D, EMA, optimizers), so a finished run can be inspected or continued."""
        if module.phase.done:
            save_checkpoint_atomic(trainer, self.run / CKPT)

    def stamp(self, images_seen: int) -> None:
        """Keep this checkpoint as kimg<count>.ckpt too (a hard link, or a copy where links fail)
        and delete the stamped ones beyond the newest `keep`."""
        last = self.run / CKPT
        stamped = last.with_name(f"kimg{images_seen / 1000:010.3f}.ckpt")
        stamped.unlink(missing_ok=True)
        try:
            os.link(last, stamped)
        except OSError:
            shutil.copyfile(last, stamped)
        for old in sorted(last.parent.glob("kimg*.ckpt"))[: -self.keep]:
            old.unlink(missing_ok=True)

    def grid(self, module: PGGAN, name: str) -> None:
        """Fixed-latent samples of the EMA generator at the current level and alpha."""
        if trainer_rank(module) != 0:
            return
        sample_grid(module, self.run / "samples" / f"{name}.png", self.n_grid, self.seed)


def trainer_rank(module: pl.LightningModule) -> int:
    """Global rank of this process (0 without a trainer)."""
    return module.global_rank if module._trainer is not None else 0


def grid_labels(n: int, label_dim: int, nrow: int = 8) -> torch.Tensor | None:
    """Condition labels of a sample grid: row r of the grid shows class r mod K (None if unconditional)."""
    if label_dim == 0:
        return None
    which = (torch.arange(n) // nrow) % label_dim
    return torch.nn.functional.one_hot(which, label_dim).float()


@torch.no_grad()
def sample_grid(module: PGGAN, path: Path, n: int = 32, seed: int = 0) -> None:
    """A PNG grid of fixed-latent EMA samples at the module's current level and alpha (a class per row)."""
    phase = module.phase
    level, alpha = (module.schedule.n_levels - 1, 1.0) if phase.done else (phase.level, phase.alpha)
    z = fixed_latents(n, module.hparams.latent_dim, seed).to(module.device)
    labels = grid_labels(n, module.hparams.label_dim)
    labels = None if labels is None else labels.to(module.device)
    images = to_uint8(module.G_ema(z, level, alpha, labels)).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, make_grid_uint8(images, nrow=8).numpy())


def loss_curve(frame: pd.DataFrame, out_png: Path) -> None:
    """Plot d_loss, g_loss and the W-distance estimate against kimg; the augmentation p on a
    second axis when the run augmented what D sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if "aug_p" in frame and frame["aug_p"].notna().any():
        part = frame[["kimg", "aug_p"]].dropna()
        right = ax.twinx()
        right.plot(part["kimg"], part["aug_p"], color="black", lw=1, ls="--", label="aug_p")
        right.set_ylim(0, 1)
        right.set_ylabel("augmentation p (dashed)")
    for col in ("d_loss", "g_loss", "wdist"):
        if col in frame:
            part = frame[["kimg", col]].dropna()
            ax.plot(part["kimg"], part[col].rolling(20, min_periods=1).mean(), label=col)
    if "level" in frame:
        for k in frame.loc[frame["level"].diff() > 0, "kimg"]:
            ax.axvline(k, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("kimg (real images shown, thousands)")
    ax.set_title("PGGAN losses (20-step mean); dotted: new resolution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def gan_fingerprint(
    prepared: Prepared,
    cfg: dict,
    classes: list[str],
    fraction: float,
    rows: pd.DataFrame,
    precision: str = "32",
) -> dict:
    """What makes a GAN: its config (less the checkpoint interval), the filter bank, the data, the
    classes, the fraction and the exact positives it learns from.

    The augment section counts only when it augments, and the resolved precision only when bf16:
    runs without either keep the fingerprints they had before these settings existed.
    """
    skip = ("checkpoint_every_kimg", "keep_checkpoints", "augment", "precision")
    gan = {k: v for k, v in cfg["gan"].items() if k not in skip}
    if augment_on(cfg["gan"]["augment"]):
        policy = ",".join(parse_policy(cfg["gan"]["augment"]["policy"]))
        gan["augment"] = {**cfg["gan"]["augment"], "policy": policy}
    if precision == "bf16":
        gan["precision"] = precision
    return fingerprint(
        gan=gan,
        filters=cfg.get("filters", {}),
        classes=classes,
        fraction=float(fraction),
        data=prepared.data_id,
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

    Several classes train one label-conditional GAN on the union of their positives. A finished
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
    conditional = len(classes) > 1
    ckpt = run / CKPT
    rows, images, labels = training_images(prepared, classes, fraction, cfg)
    precision = gan_precision(accelerator, cfg["gan"]["precision"])
    fp = gan_fingerprint(prepared, cfg, classes, fraction, rows, precision)
    resume = reuse_or_start(run, fp, ckpt, opts, "GAN")
    if resume is None:
        return run
    if resume:
        check_same_classes(run, classes)
    pl.seed_everything(cfg["gan"]["seed"], workers=True, verbose=False)
    module = gan_module(cfg, len(classes) if conditional else 0, precision)  # validates first
    rec = prepared.records
    where = {"classes": classes, "fraction": fraction, "data": str(rec.root), "source": rec.source}
    open_run(run, fp, {**cfg, "run": where})
    keep = ["image_id", "patient", "path", *prepared.records.label_names]
    rows[keep].to_csv(run / POSITIVES, index=False)
    heldout_positives(prepared, classes, rows)[keep].to_csv(run / HELDOUT, index=False)
    seed = cfg["gan"]["seed"]
    data = loader(images, module.schedule.max_batch, seed, labels if conditional else None)
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
        check_checkpoint(ckpt)
    trainer.fit(module, data, ckpt_path=str(ckpt) if resume else None)
    if not module.phase.done:
        raise RareganError(
            f"GAN training in {run} stopped before the schedule ended; resume with --resume"
        )
    if trainer.global_rank == 0:
        rec = prepared.records
        finish(run, module, rows, images, classes, fraction, cfg, list(rec.label_names), rec.task)
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
        "conditional": len(classes) > 1,
        "fraction": fraction,
        "positives": len(rows),
        "training_images": len(images),
        "kimg": module.images_seen / 1000,
        "steps": module.steps,
        "train_minutes": round(module.train_seconds / 60, 2),
        "label_names": label_names,
        "task": task,
    }
    write_json(run / "summary.json", summary)
    mark_done(run, summary)

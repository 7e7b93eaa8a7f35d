"""A denoising diffusion model (DDPM; Ho et al. 2020) as a generator kind, sampled with DDIM (Song
et al. 2021), built from MONAI's `DiffusionModelUNet` and schedulers (medical imaging's own toolkit;
why MONAI and not diffusers: docs/generators.md and benchmarks/bench_diffusion_step.py).

Training: the ε-prediction loss (mean squared error, in fp32) on the class's train positives after
the filter bank, AdamW, an exponential moving average of the weights (what samples), bf16
autocast where the machine has native bf16 (`diffusion.precision`). Every step draws its images,
noise and timesteps from a generator seeded by (diffusion.seed, step), so a resumed run continues
exactly as an uninterrupted one. Transfer: `diffusion.init_from` names a finished diffusion run
(e.g. of the abundant class) whose averaged weights both the model and its average start from;
the same source check as the GAN's keeps its images inside this run's fraction.
"""

from __future__ import annotations

import copy
import math
import sys
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
from pipelines.gan.outputs import CKPT, HELDOUT, POSITIVES, trainer_rank
from pipelines.gan.run import as_classes, check_same_classes, heldout_positives, training_images
from pipelines.gan.transfer import check_source_images, write_exported
from pipelines.images import save_png
from pipelines.machine import mixed_precision
from pipelines.runs import (
    finished_summary,
    is_done,
    keep_stamped,
    loggers,
    mark_done,
    merged_logs,
    save_checkpoint_atomic,
    write_json,
)

SECTION = "diffusion"
GENERATOR = "generator_ema.pt"
# settings of how a run is carried out, not of what it computes: out of the fingerprint
# (sample_steps counts: the run's sampler, saved with its weights, draws its samples with it)
NOT_FINGERPRINTED = ("checkpoint_every_kimg", "keep_checkpoints", "precision", "init_from")


def make_unet(hp: dict, label_dim: int = 0) -> torch.nn.Module:
    """MONAI's 2-D DiffusionModelUNet for one-channel images, sized by the diffusion section."""
    from monai.networks.nets import DiffusionModelUNet

    levels = len(hp["channels"])
    attention = list(hp["attention_levels"])
    if len(attention) != levels:
        raise RareganError(
            f"diffusion.attention_levels has {len(attention)} entries for {levels} levels of "
            "diffusion.channels; give one true/false per level"
        )
    if any(c % hp["norm_num_groups"] for c in hp["channels"]):
        raise RareganError(
            f"diffusion.channels {hp['channels']} must be multiples of diffusion.norm_num_groups "
            f"({hp['norm_num_groups']})"
        )
    if hp["resolution"] % 2 ** (levels - 1):
        raise RareganError(
            f"diffusion.resolution {hp['resolution']} cannot be halved {levels - 1} times "
            f"({levels} levels of diffusion.channels)"
        )
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=list(hp["channels"]),
        attention_levels=attention,
        num_res_blocks=hp["num_res_blocks"],
        norm_num_groups=hp["norm_num_groups"],
        num_head_channels=hp["head_channels"],
        num_class_embeds=label_dim or None,
    )


def noise_schedule(hp: dict, sampler: str = "ddpm"):
    """MONAI's DDPM scheduler (training) or DDIM scheduler (sampling) of the run's noise schedule."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    kind = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
    return kind(num_train_timesteps=hp["timesteps"], schedule=hp["schedule"], clip_sample=True)


def ddim_schedule(hp: dict, steps: int):
    """MONAI's DDIM scheduler with `steps` timesteps spaced T // steps apart from (steps − 1) ·
    (T // steps) down to 0: the spacing its `step` assumes (it steps back by T // steps), where
    MONAI 1.6's `set_timesteps` spaces them (T − 1) / (steps − 1) apart, so that each model call
    would see a noise level one or two timesteps off its input's."""
    schedule = noise_schedule(hp, "ddim")
    schedule.set_timesteps(steps)
    stride = hp["timesteps"] // steps
    schedule.timesteps = torch.arange(steps - 1, -1, -1, dtype=torch.long) * stride
    return schedule


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random draws of one training step, from (seed, step) alone: a resume repeats them."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def step_batch(
    images: torch.Tensor, hp: dict, step: int, rank: int = 0, world: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training step `step`'s images (in [-1, 1]), noise and timesteps for rank `rank` of `world`:
    one batch of diffusion.batch_size drawn from (seed, step) alike on every rank, each rank its
    slice (DDP averages the gradients), so any device count trains on the same draws."""
    g = step_generator(hp["seed"], step)
    b = hp["batch_size"]
    pick = torch.randint(len(images), (b,), generator=g)
    noise = torch.randn((b, 1, *images.shape[-2:]), generator=g)
    t = torch.randint(0, hp["timesteps"], (b,), generator=g)
    pick, noise, t = pick[rank::world], noise[rank::world], t[rank::world]
    return images[pick].float().div(127.5).sub(1.0), noise, t


class Diffusion(pl.LightningModule):
    """A DDPM on uint8 images held in memory: ε-prediction, AdamW, EMA weights."""

    def __init__(
        self,
        hp: dict,
        total_steps: int,
        precision: str = "32",
        images: np.ndarray | None = None,
    ):
        super().__init__()
        self.save_hyperparameters("hp", "total_steps", "precision")
        self.hp = hp
        self.unet = make_unet(hp)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.schedule = noise_schedule(hp)
        self.images = None if images is None else torch.from_numpy(np.ascontiguousarray(images))
        self.train_seconds = 0.0

    def training_step(self, batch, batch_idx):
        started = time.perf_counter()
        world, rank = self.trainer.world_size, self.global_rank
        x0, noise, t = step_batch(self.images, self.hp, self.global_step, rank, world)
        x0, noise, t = x0.to(self.device), noise.to(self.device), t.to(self.device)
        noisy = self.schedule.add_noise(x0, noise, t)
        with autocast(self.device, self.hparams.precision):
            predicted = self.unet(noisy, t)
        loss = F.mse_loss(predicted.float(), noise)  # the loss in fp32
        self.log("loss", loss.detach(), on_step=True, prog_bar=True)
        self.train_seconds += time.perf_counter() - started
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The step, then the average: both before any callback saves a checkpoint of this step."""
        super().optimizer_step(*args, **kwargs)
        self.update_average()

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


def autocast(device: torch.device, precision: str):
    """bf16 autocast for precision "bf16" (CPU or GPU), fp16 AMP for "16", else nothing."""
    if precision in ("bf16", "16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def precision(accelerator: str, setting: str) -> str:
    """diffusion.precision on this machine: bf16 where native ("auto"), else fp32."""
    return mixed_precision(accelerator, setting, "diffusion.precision", "bf16")


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
    when bf16, and the run it starts from (by its fingerprint)."""
    hp = {k: v for k, v in cfg[SECTION].items() if k not in NOT_FINGERPRINTED}
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


class Checkpoints(pl.Callback):
    """last.ckpt every N steps (atomic) plus a step-stamped link, the newest `keep` kept; the
    final state at the end."""

    def __init__(self, run: Path, every_steps: int, keep: int):
        self.run, self.every, self.keep = Path(run), max(1, every_steps), keep

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step < module.hparams.total_steps:
            save_checkpoint_atomic(trainer, self.run / CKPT)
            if trainer_rank(module) == 0:
                keep_stamped(self.run / CKPT, "step", f"{step:09d}", self.keep)

    def on_train_end(self, trainer, module) -> None:
        if trainer.global_step >= module.hparams.total_steps:
            save_checkpoint_atomic(trainer, self.run / CKPT)


class StepLines(pl.Callback):
    """Without a progress bar: one line per tenth of the run (step, loss, img/s)."""

    def on_train_start(self, trainer, module) -> None:
        self.started, self.first = time.perf_counter(), trainer.global_step
        self.every = max(1, module.hparams.total_steps // 10)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == module.hparams.total_steps:
            rate = (
                (step - self.first) * module.hp["batch_size"] / (time.perf_counter() - self.started)
            )
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            print(
                f"diffusion step {step}/{module.hparams.total_steps}: loss {loss:.4f}, "
                f"{rate:.1f} img/s",
                file=sys.stderr,
                flush=True,
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
    if len(classes) > 1:
        raise RareganError(
            "the diffusion model learns one class (or several pooled: give them as one transfer "
            f"source with diffusion.init_from); got {', '.join(classes)}"
        )
    hp = cfg[SECTION]
    rows, images, _ = training_images(prepared, classes, fraction, cfg, SECTION)
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
    module = Diffusion(dict(hp), steps, resolved, images)
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
    module.unet.load_state_dict(saved["state_dict"])
    module.ema.load_state_dict(saved["state_dict"])


ARCHITECTURE = ("resolution", "channels", "attention_levels", "num_res_blocks", "norm_num_groups")
ARCHITECTURE += ("head_channels", "timesteps", "schedule")


def export_source(run: Path, out: Path) -> Path:
    """A finished diffusion run as a transfer source to commit (`raregan gan --generator diffusion
    --export-source DIR`): its averaged weights and what it learned from and what made it, without
    checkpoints (a fine-tune loads only the averaged weights); its fingerprint id is the run's."""
    run = Path(run)
    if not is_done(run) or not (run / GENERATOR).is_file():
        raise RareganError(f"{run} is not a finished diffusion run (it needs DONE and {GENERATOR})")
    return write_exported(run, out, lambda tmp: tmp / GENERATOR)


def read_diffusion_checkpoint(path: Path) -> dict:
    """A diffusion training checkpoint's contents; a user error unless it is a readable one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise RareganError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}); delete it and start over"
        ) from None
    if not isinstance(state, dict) or "diffusion_state" not in state:
        raise RareganError(
            f"{path} is not a raregan diffusion checkpoint; delete it and start over"
        )
    return state


def finish(run, module, rows, images, classes, fraction, cfg, label_names, task) -> None:
    """Averaged weights, a sample grid, the loss log and the summary; DONE last."""
    hp = dict(module.hp)
    torch.save({"hparams": hp, "state_dict": module.ema.state_dict()}, run / GENERATOR)
    sampler = DiffusionSampler(copy.deepcopy(module.ema).cpu(), hp, progress=False)
    grid = sampler.sample(32, seed=hp["seed"])
    from pggan.sample import make_grid_uint8

    (run / "samples").mkdir(parents=True, exist_ok=True)
    save_png(run / "samples" / "final.png", make_grid_uint8(grid, nrow=8).numpy())
    losses = merged_logs(run)
    losses.to_csv(run / "losses.csv", index=False)
    summary = {
        "generator": "diffusion",
        "class": " + ".join(classes),
        "classes": classes,
        "conditional": False,
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


class DiffusionSampler:
    """DDIM sampling (η = 0: deterministic given the starting noise) of a diffusion model's
    averaged weights; the starting noise of image i depends only on the seed, not on the batch."""

    label_dim = 0

    def __init__(self, unet: torch.nn.Module, hp: dict, steps: int | None = None, progress=True):
        self.unet, self.hp = unet.eval(), hp
        self.resolution = hp["resolution"]
        self.steps = steps or hp["sample_steps"]
        self.progress = progress

    @torch.no_grad()
    def sample(
        self, n: int, seed: int = 0, labels: torch.Tensor | None = None, batch: int = 64
    ) -> torch.Tensor:
        if labels is not None:
            raise RareganError("this diffusion model is not label-conditional")
        r = self.resolution
        noise = torch.randn((n, 1, r, r), generator=torch.Generator().manual_seed(seed))
        device = next(self.unet.parameters()).device
        schedule = ddim_schedule(self.hp, self.steps)
        precision = sampling_precision(device, self.hp["precision"])
        out = []
        bar = None
        if self.progress and n:
            from tqdm import tqdm

            bar = tqdm(total=math.ceil(n / batch) * self.steps, desc="DDIM sampling", leave=False)
        for start in range(0, n, batch):
            x = noise[start : start + batch].to(device)
            for t in schedule.timesteps:
                steps = torch.full((len(x),), int(t), device=device, dtype=torch.long)
                with autocast(device, precision):
                    eps = self.unet(x, steps)
                x, _ = schedule.step(eps.float(), int(t), x)
                if bar is not None:
                    bar.update()
            out.append(x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
        if bar is not None:
            bar.close()
        if not out:
            return torch.zeros(0, 1, r, r, dtype=torch.uint8)
        return torch.cat(out)


def sampling_precision(device: torch.device, setting: str) -> str:
    """The autocast of sampling: diffusion.precision resolved for the device sampling (bf16 where
    native under "auto"; the DDIM update itself stays in fp32)."""
    accelerator = "gpu" if torch.device(device).type == "cuda" else "cpu"
    return mixed_precision(accelerator, setting, "diffusion.precision", "bf16")


def load(run: Path, device="cpu", checkpoint: Path | None = None, raw: bool = False):
    """The sampler of a finished diffusion run (its averaged weights, or a checkpoint's: `raw` the
    trained weights instead of their average) and the run's summary."""
    run = Path(run)
    summary = finished_summary(run, "diffusion")
    saved = torch.load(run / GENERATOR, map_location="cpu", weights_only=False)
    hp, state = saved["hparams"], saved["state_dict"]
    if raw and checkpoint is None:
        checkpoint = run / CKPT
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            path = run / "checkpoints" / Path(checkpoint).name
        ckpt = read_diffusion_checkpoint(path)
        prefix = "unet." if raw else "ema."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        step = ckpt.get("global_step", 0)
        summary["checkpoint"] = {
            "name": path.name,
            "kimg": step * hp["batch_size"] / 1000,
            "train_minutes": round(ckpt["diffusion_state"]["train_seconds"] / 60, 2),
            **({"generator": "raw"} if raw else {}),
        }
    unet = make_unet(hp)
    unet.load_state_dict(state)
    return DiffusionSampler(unet.to(device), hp), summary

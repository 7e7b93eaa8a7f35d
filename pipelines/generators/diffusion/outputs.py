"""What a diffusion run shows and writes while it trains: sample grids of the averaged weights, the
checkpoints (atomic, the newest kept), and one line per tenth of the run without a progress bar."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from pipelines.gan.outputs import CKPT, grid_labels, trainer_rank
from pipelines.generators.diffusion.sampling import DiffusionSampler
from pipelines.images import save_png
from pipelines.runs import keep_stamped, save_checkpoint_atomic


def sample_grid(
    ema: torch.nn.Module, hp: dict, path: Path, n: int = 32, label_dim: int = 0
) -> None:
    """A grid of n DDIM samples of the averaged weights (noise seeded by diffusion.seed alone: the
    grids of one run show the same starting noise at every checkpoint), written to path; a
    class-conditional model's rows cycle through its classes (row r: class r mod label_dim)."""
    from pggan.sample import make_grid_uint8

    sampler = DiffusionSampler(copy.deepcopy(ema), hp, progress=False, label_dim=label_dim)
    grid = sampler.sample(n, seed=hp["seed"], labels=grid_labels(n, label_dim))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, make_grid_uint8(grid, nrow=8).numpy())


class Checkpoints(pl.Callback):
    """last.ckpt every N steps (atomic) plus a step-stamped link, the newest `keep` kept, and a
    grid of the averaged weights' samples (samples/kimgNNNNN.NN.png: look at them while it
    trains); the final state at the end."""

    def __init__(self, run: Path, every_steps: int, keep: int):
        self.run, self.every, self.keep = Path(run), max(1, every_steps), keep

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step < module.hparams.total_steps:
            save_checkpoint_atomic(trainer, self.run / CKPT)
            if trainer_rank(module) == 0:
                keep_stamped(self.run / CKPT, "step", f"{step:09d}", self.keep)
                kimg = step * module.hp["batch_size"] / 1000
                grid = self.run / "samples" / f"kimg{kimg:08.2f}.png"
                sample_grid(module.ema, module.hp, grid, label_dim=module.label_dim)

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

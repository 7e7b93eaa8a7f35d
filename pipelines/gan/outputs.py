"""What a GAN run shows and leaves while it trains: progress bar or phase lines, checkpoints, sample
grids, the loss curve."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from pggan import PGGAN, fixed_latents, make_grid_uint8, to_uint8
from pipelines.errors import RareganError
from pipelines.images import save_png
from pipelines.runs import keep_stamped, save_checkpoint_atomic

CKPT = "checkpoints/last.ckpt"
POSITIVES = "positives.csv"  # the real images a GAN run learned from
HELDOUT = "heldout.csv"  # the classes' val and test positives: real images the GAN never saw


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
        """Keep this checkpoint as kimg<count>.ckpt too; only the newest `keep` such stay."""
        keep_stamped(self.run / CKPT, "kimg", f"{images_seen / 1000:010.3f}", self.keep)

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


def read_checkpoint(path: Path) -> dict:
    """A PGGAN training checkpoint's contents; a user error unless it is a readable one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: torch raises many kinds
        raise RareganError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}); delete it and start over"
        ) from None
    if not isinstance(state, dict) or "pggan_state" not in state or "state_dict" not in state:
        raise RareganError(f"{path} is not a raregan GAN checkpoint; delete it and start over")
    return state

"""Lightning module that trains a progressive-growing GAN with WGAN-GP (n_critic = 1).

Each batch is real images (N, C, R, R) as floats in [-1, 1], optionally with multi-hot labels
(N, K); the dataloader should yield ``module.schedule.max_batch`` images. The schedule
(``pggan.schedule``) decides level, alpha and batch size from the image count, which is
checkpointed, so ``trainer.fit(ckpt_path=...)`` resumes exactly; the module stops the trainer
when the schedule ends. Randomness per step comes from a generator seeded by (seed, rank,
image count), so a resumed step draws the same latents as the uninterrupted run.

Optimizers: fused Adam(lr, betas=(0, 0.99), eps=1e-8) for G and D; their state is cleared
whenever a new level starts (the official code's ``reset_opt_for_new_lod``). The level the
state belongs to is checkpointed with it, so a restore mid-phase keeps the state. Sampling
uses ``G_ema`` (see ``pggan.ema`` for the ramped decay).

DDP: use ``strategy="ddp_find_unused_parameters_true"`` (plain ``"ddp"`` refuses, as each
step does two backward passes that each touch one network). ``batch_per_resolution`` is per
process; the image count advances by batch * world_size, identically on every rank.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from pggan.ema import decay_at, update_ema
from pggan.layers import downsample, upsample
from pggan.loss import d_loss_wgan_gp, g_loss_wgan
from pggan.networks import Discriminator, Generator
from pggan.schedule import Phase, Schedule

_STATE_KEY = "pggan_state"


def prepare_reals(x: torch.Tensor, resolution: int, alpha: float) -> torch.Tensor:
    """Area-downsample reals to ``resolution`` and blend them across a fade-in like G's output."""
    factor = x.shape[-1] // resolution
    if factor < 1 or x.shape[-1] != factor * resolution:
        raise ValueError(f"real images of {x.shape[-1]} px cannot be reduced to {resolution} px")
    x = downsample(x, factor)
    if alpha < 1.0:
        x = torch.lerp(upsample(downsample(x)), x, alpha)
    return x


class PGGAN(pl.LightningModule):
    """Generator, discriminator, EMA generator and the progressive WGAN-GP training step."""

    def __init__(
        self,
        resolution: int = 64,
        channels: Sequence[int] = (128, 128, 128, 64, 32),
        latent_dim: int = 128,
        label_dim: int = 0,
        img_channels: int = 1,
        kimg_per_phase: float = 600.0,
        batch_per_resolution: dict[int, int] | None = None,
        default_batch: int = 16,
        final_kimg: float | None = None,
        lr: float = 1e-3,
        gp_lambda: float = 10.0,
        drift: float = 1e-3,
        ema_beta: float = 0.999,
        ema_rampup: bool = True,
        mbstd_group: int = 4,
        seed: int = 0,
        channels_last: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.schedule = Schedule(
            resolution, kimg_per_phase, dict(batch_per_resolution or {}), default_batch, final_kimg
        )
        with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed only
            torch.manual_seed(seed)
            self.G = Generator(resolution, channels, latent_dim, label_dim, img_channels)
            self.D = Discriminator(resolution, channels, label_dim, img_channels, mbstd_group)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        if channels_last:
            for net in (self.G, self.D, self.G_ema):
                net.to(memory_format=torch.channels_last)
        self.images_seen = 0  # real images shown so far, all ranks together
        self.steps = 0
        self.opt_level = 0  # the level the optimizer state belongs to

    # ---- optimizers and checkpoint state -------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for G and for D with the paper's betas (0, 0.99); fused kernels (CPU and CUDA)."""
        hp = self.hparams
        return [
            torch.optim.Adam(net.parameters(), lr=hp.lr, betas=(0.0, 0.99), eps=1e-8, fused=True)
            for net in (self.G, self.D)
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the schedule position and the optimizer-state level."""
        checkpoint[_STATE_KEY] = {
            "images_seen": self.images_seen,
            "steps": self.steps,
            "opt_level": self.opt_level,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what ``on_save_checkpoint`` stored."""
        state = checkpoint[_STATE_KEY]
        self.images_seen, self.steps = state["images_seen"], state["steps"]
        self.opt_level = state["opt_level"]

    # ---- training -----------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        """Schedule state at the current image count."""
        return self.schedule.at(self.images_seen)

    def _step_generator(self) -> torch.Generator:
        """RNG for this step: a pure function of (seed, rank, image count)."""
        key = (self.hparams.seed * 1_000_003 + self.global_rank) * 1_000_000_007 + self.images_seen
        gen = torch.Generator(device=self.device)
        gen.manual_seed(key % (2**63))
        return gen

    def _unpack(self, batch: torch.Tensor | Sequence) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Accept a tensor of images or an (images, labels, ...) sequence."""
        if isinstance(batch, torch.Tensor):
            return batch, None
        reals = batch[0]
        labels = batch[1] if len(batch) > 1 and self.hparams.label_dim > 0 else None
        return reals, labels

    def training_step(
        self, batch: torch.Tensor | Sequence, batch_idx: int
    ) -> dict[str, torch.Tensor] | None:
        """One D step then one G step on the first ``batch_size(images_seen)`` reals; their losses."""
        phase = self.phase
        if phase.done:
            self.trainer.should_stop = True
            return None
        reals, labels = self._unpack(batch)
        n = min(phase.batch_size, reals.shape[0])
        reals = prepare_reals(reals[:n].float(), phase.resolution, phase.alpha)
        if self.hparams.channels_last:
            reals = reals.contiguous(memory_format=torch.channels_last)
        labels = None if labels is None else labels[:n].float()
        level, alpha, hp = phase.level, phase.alpha, self.hparams
        opt_g, opt_d = self.optimizers()
        if level != self.opt_level:  # new resolution: fresh Adam state (paper's code)
            for opt in (opt_g, opt_d):
                opt.optimizer.state.clear()
            self.opt_level = level
        gen = self._step_generator()

        # Critic step: fakes without G's graph, reals + fakes in one pass, penalty pass.
        z = torch.randn(n, hp.latent_dim, device=self.device, generator=gen)
        with torch.no_grad():
            fakes = self.G(z, level, alpha, labels)
        d_loss, parts = d_loss_wgan_gp(
            self.D, reals, fakes, level, alpha, labels, hp.gp_lambda, hp.drift, gen
        )
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Generator step with fresh latents; D's weights need no gradient here.
        self.D.requires_grad_(False)
        z = torch.randn(n, hp.latent_dim, device=self.device, generator=gen)
        g_loss = g_loss_wgan(self.D, self.G(z, level, alpha, labels), level, alpha, labels)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.D.requires_grad_(True)

        update_ema(self.G_ema, self.G, decay_at(hp.ema_beta, self.steps, hp.ema_rampup))
        self.steps += 1
        self.images_seen += n * self.trainer.world_size
        self._log_step(d_loss, g_loss, parts, phase)
        if self.phase.done:
            self.trainer.should_stop = True
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def _log_step(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, parts: dict, phase: Phase
    ) -> None:
        """Log losses (device tensors, no forced sync) and schedule position."""
        log = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "gp": parts["gp"]}
        self.log_dict(log, prog_bar=True, on_step=True, on_epoch=False)
        self.log("wdist", parts["wdist"], on_step=True, on_epoch=False)
        sched = {"level": float(phase.level), "alpha": phase.alpha, "kimg": self.images_seen / 1e3}
        self.log_dict(sched, prog_bar=True, on_step=True, on_epoch=False)

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

Limited data: ``augment_policy`` (see ``pggan.augment``) augments everything D sees, reals and
fakes, in the D step (the penalty is taken between augmented reals and fakes) and fakes in the G
step, each sample with probability p: fixed ``augment_p``, or adapted from it by ADA's heuristic
(``augment_adaptive``; its state is checkpointed). Augmentation draws come from a second per-step
generator (CPU), so the latents and penalty draws are those of an unaugmented run.

Transfer (Wang et al. 2018, "Transferring GANs"): ``start_from(state_dict)`` takes G, D and the
EMA generator of a finished GAN of the same architecture (trained on other, abundant images) and
moves the schedule to the start of its final, full-resolution phase, so that the run fine-tunes
for ``final_kimg`` only. ``freeze_d`` = k keeps D's k highest-resolution levels (their fromRGB and
downsampling block) fixed, FreezeD (Mo et al. 2020).

Precision: ``precision="bf16"`` runs G and D forward passes under bf16 autocast on the module's
device; augmentation, losses, the penalty's input gradient, the EMA and the optimizer state stay
fp32. Deciding whether bf16 is worth it (native on this CPU/GPU?) is the caller's job.

DDP: use ``strategy="ddp_find_unused_parameters_true"`` (plain ``"ddp"`` refuses, as each
step does two backward passes that each touch one network). ``batch_per_resolution`` is per
process; the image count advances by batch * world_size, identically on every rank.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from pggan.augment import AdaptiveP, DiffAugment, check_p
from pggan.ema import decay_at, update_ema
from pggan.layers import check_resample, downsample, upsample
from pggan.loss import d_loss_wgan_gp, g_loss_wgan
from pggan.networks import Discriminator, Generator
from pggan.schedule import Phase, Schedule

_STATE_KEY = "pggan_state"
PRECISIONS = ("32", "bf16")


def prepare_reals(
    x: torch.Tensor, resolution: int, alpha: float, resample: str = "nearest"
) -> torch.Tensor:
    """Downsample reals to ``resolution`` (area, or lowpass) and blend them across a fade-in like
    G's output (resampled the way G and D resample)."""
    check_resample(resample)
    factor = x.shape[-1] // resolution
    if factor < 1 or x.shape[-1] != factor * resolution:
        raise ValueError(f"real images of {x.shape[-1]} px cannot be reduced to {resolution} px")
    x = downsample(x, factor, resample)
    if alpha < 1.0:
        x = torch.lerp(upsample(downsample(x, 2, resample), resample), x, alpha)
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
        ema_continue: bool = False,
        mbstd_group: int = 4,
        seed: int = 0,
        channels_last: bool = True,
        augment_policy: str = "",
        augment_p: float = 0.0,
        augment_adaptive: bool = False,
        augment_target: float = 0.6,
        augment_speed_kimg: float = 10.0,
        precision: str = "32",
        freeze_d: int = 0,
        resample: str = "nearest",
    ):
        super().__init__()
        self.save_hyperparameters()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.augment = DiffAugment(augment_policy)  # a plain object: its kornia ops stay on the CPU
        self.ada = (
            AdaptiveP(augment_p, augment_target, augment_speed_kimg) if augment_adaptive else None
        )
        self.fixed_p = check_p(augment_p)
        self.automatic_optimization = False
        self.schedule = Schedule(
            resolution, kimg_per_phase, dict(batch_per_resolution or {}), default_batch, final_kimg
        )
        with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed only
            torch.manual_seed(seed)
            self.G = Generator(
                resolution, channels, latent_dim, label_dim, img_channels, resample=resample
            )
            self.D = Discriminator(
                resolution, channels, label_dim, img_channels, mbstd_group, resample
            )
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        if channels_last:
            for net in (self.G, self.D, self.G_ema):
                net.to(memory_format=torch.channels_last)
        self._d_trainable = self._freeze_d(freeze_d)
        self.images_seen = 0  # real images shown so far, all ranks together
        self.steps = 0
        self.opt_level = 0  # the level the optimizer state belongs to
        self.train_seconds_before = 0.0  # wall seconds of training in earlier fits (resumes)
        self.images_start = 0  # where this run's schedule began (the final phase after start_from)
        self._fit_start: float | None = None

    def _freeze_d(self, k: int) -> list[torch.nn.Parameter]:
        """Fix D's `k` highest-resolution levels (fromRGB and block of each); its trainable rest."""
        n_levels = self.D.n_levels
        if not 0 <= k < n_levels:
            raise ValueError(
                f"freeze_d must be in [0, {n_levels - 1}] for {n_levels} levels, got {k}"
            )
        top = n_levels - 1
        frozen = [self.D.from_rgb[top - i] for i in range(k)]
        frozen += [self.D.blocks[top - 1 - i] for i in range(k)]
        for layer in frozen:
            layer.requires_grad_(False)
        return [p for p in self.D.parameters() if p.requires_grad]

    def start_from(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Take G, D and G_ema from a finished GAN's state dict (same architecture: a ValueError
        names the first mismatch) and start at the final phase: this run fine-tunes."""
        own = self.state_dict()
        for key in [*own, *(k for k in state_dict if k not in own)]:  # missing, extra or reshaped
            mine, theirs = (tuple(d[key].shape) if key in d else None for d in (own, state_dict))
            if mine != theirs:
                raise ValueError(
                    f"{key}: this GAN has {mine or 'none'}, the source {theirs or 'missing'}"
                )
        self.load_state_dict(state_dict, strict=True)
        self.images_seen = self.images_start = self.schedule.phase_start(self.schedule.n_phases - 1)
        self.opt_level = self.phase.level  # no optimizer state yet: nothing to clear

    def ema_decay(self) -> float:
        """The G_ema decay of the next update. The ramp lets an average forget a random start fast;
        a fine-tune (start_from) restarts it, and within a few dozen steps its G_ema is its raw G.
        `ema_continue` (a fine-tune's setting) averages on from the source's at ema_beta instead."""
        hp = self.hparams
        return decay_at(hp.ema_beta, self.steps, hp.ema_rampup and not hp.ema_continue)

    def ema_source_share(self) -> float | None:
        """With ema_continue, the share of the source's G_ema left in G_ema at the end of the final
        phase: ema_beta ** its steps (one update each, on one process; DDP takes fewer steps for
        the same images and leaves more); None without ema_continue."""
        if not self.hparams.ema_continue:
            return None
        last = self.schedule.n_phases - 1
        steps = math.ceil(
            self.schedule.phase_images(last) / self.schedule.batch_size(self.schedule.n_levels - 1)
        )
        return self.hparams.ema_beta**steps

    # ---- optimizers and checkpoint state -------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for G and for D with the paper's betas (0, 0.99); fused kernels (CPU and CUDA)."""
        hp = self.hparams
        return [
            torch.optim.Adam(params, lr=hp.lr, betas=(0.0, 0.99), eps=1e-8, fused=True)
            for params in (list(self.G.parameters()), self._d_trainable)
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the schedule position, the optimizer-state level and the adaptive p's state."""
        checkpoint[_STATE_KEY] = {
            "images_seen": self.images_seen,
            "steps": self.steps,
            "opt_level": self.opt_level,
            "augment": None if self.ada is None else self.ada.state_dict(),
            "train_seconds": self.train_seconds,
            "images_start": self.images_start,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what ``on_save_checkpoint`` stored."""
        state = checkpoint[_STATE_KEY]
        self.images_seen, self.steps = state["images_seen"], state["steps"]
        self.opt_level = state["opt_level"]
        self.train_seconds_before = state.get("train_seconds", 0.0)
        self.images_start = state.get("images_start", 0)
        if self.ada is not None and state.get("augment"):
            self.ada.load_state_dict(state["augment"])

    def on_train_start(self) -> None:
        """Start the wall clock of this fit (train_seconds adds it to earlier fits')."""
        self._fit_start = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        """Wall seconds spent training so far, over every fit of a resumed run."""
        now = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self.train_seconds_before + now

    # ---- training -----------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        """Schedule state at the current image count."""
        return self.schedule.at(self.images_seen)

    @property
    def aug_p(self) -> float:
        """The augmentation probability of the next step (0 without a policy)."""
        if not self.augment:
            return 0.0
        return self.fixed_p if self.ada is None else self.ada.p

    def _step_generator(
        self, device: torch.device | None = None, stream: int = 0
    ) -> torch.Generator:
        """RNG for this step: a pure function of (seed, rank, image count, stream)."""
        key = (self.hparams.seed * 1_000_003 + self.global_rank) * 1_000_000_007 + self.images_seen
        gen = torch.Generator(device=self.device if device is None else device)
        gen.manual_seed((key + stream * 0x9E3779B97F4A7C15) % (2**63))
        return gen

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the module's device when precision is bf16; else nothing."""
        if self.hparams.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _augmented(
        self, x: torch.Tensor, p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """`x` (fp32) through the augmentation policy, in D's memory format."""
        x = x.float()
        if generator is None or p == 0.0:
            return x
        x = self.augment(x, p, generator)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

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
        reals = prepare_reals(reals[:n].float(), phase.resolution, phase.alpha, self.G.resample)
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
        p = self.aug_p
        aug_gen = self._step_generator(torch.device("cpu"), stream=1) if p > 0 else None

        # Critic step: fakes without G's graph, augmented reals + fakes in one pass, penalty pass
        # at interpolates of the augmented reals and fakes.
        z = torch.randn(n, hp.latent_dim, device=self.device, generator=gen)
        with torch.no_grad(), self._autocast():
            fakes = self.G(z, level, alpha, labels)
        if aug_gen is not None:  # one call: each of the 2n images draws its own parameters
            both = self._augmented(torch.cat([reals, fakes.float()]), p, aug_gen)
            reals, fakes = both[:n], both[n:]
        with self._autocast():
            d_loss, parts = d_loss_wgan_gp(
                self.D, reals, fakes.float(), level, alpha, labels, hp.gp_lambda, hp.drift, gen
            )
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Generator step with fresh latents, through the augmentation; D's weights need no gradient.
        self.D.requires_grad_(False)
        z = torch.randn(n, hp.latent_dim, device=self.device, generator=gen)
        with self._autocast():
            fakes = self.G(z, level, alpha, labels)
        fakes = self._augmented(fakes, p, aug_gen)
        with self._autocast():
            g_loss = g_loss_wgan(self.D, fakes, level, alpha, labels)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        for param in self._d_trainable:  # frozen levels (freeze_d) stay frozen
            param.requires_grad_(True)

        update_ema(self.G_ema, self.G, self.ema_decay())
        self.steps += 1
        world = self.trainer.world_size
        self.images_seen += n * world
        if self.ada is not None and self.augment:
            reduce = None if world == 1 else self._mean_over_processes
            self.ada.update(parts["real_sign"], n * world, reduce)
        self._log_step(d_loss, g_loss, parts, phase, p)
        if self.phase.done:
            self.trainer.should_stop = True
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def _mean_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over the DDP processes (every rank then moves p alike)."""
        return self.trainer.strategy.reduce(value, reduce_op="mean")

    def _log_step(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, parts: dict, phase: Phase, p: float
    ) -> None:
        """Log losses (device tensors, no forced sync), schedule position and, with a policy, aug_p."""
        log = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "gp": parts["gp"]}
        self.log_dict(log, prog_bar=True, on_step=True, on_epoch=False)
        self.log("wdist", parts["wdist"], on_step=True, on_epoch=False)
        sched = {"level": float(phase.level), "alpha": phase.alpha, "kimg": self.images_seen / 1e3}
        self.log_dict(sched, prog_bar=True, on_step=True, on_epoch=False)
        if self.augment:
            self.log("aug_p", p, on_step=True, on_epoch=False)

"""A finished diffusion run: its DDIM sampler (the averaged weights, or a checkpoint's), and its
export as a transfer source to commit."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pipelines.errors import RareganError
from pipelines.gan.outputs import CKPT
from pipelines.gan.transfer import write_exported
from pipelines.generators.diffusion.net import (
    GENERATOR,
    autocast,
    ddim_schedule,
    make_unet,
    read_diffusion_checkpoint,
    sampling_precision,
)
from pipelines.runs import (
    finished_summary,
    is_done,
)


class DiffusionSampler:
    """DDIM sampling (η = 0: deterministic given the starting noise) of a diffusion model's
    averaged weights; the starting noise of image i depends only on the seed, not on the batch
    or the labels. A model of `label_dim` classes samples the class each label row names (one-hot)
    with classifier-free guidance: ε = ε_null + g · (ε_class − ε_null), g = diffusion.guidance
    (Ho & Salimans 2022; g = 1: the conditional model alone, one pass per step)."""

    def __init__(
        self,
        unet: torch.nn.Module,
        hp: dict,
        steps: int | None = None,
        progress=True,
        label_dim: int = 0,
    ):
        self.unet, self.hp = unet.eval(), hp
        self.resolution = hp["resolution"]
        self.steps = steps or hp["sample_steps"]
        self.progress = progress
        self.label_dim = label_dim

    def class_indices(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Each image's class index from its one-hot label row (None for a one-class model)."""
        if not self.label_dim:
            if labels is not None:
                raise RareganError("this diffusion model is not label-conditional")
            return None
        if labels is None or tuple(labels.shape) != (n, self.label_dim):
            raise RareganError(
                f"this diffusion model is conditioned on {self.label_dim} classes: give one "
                f"label row per image ({n}, {self.label_dim})"
            )
        if not bool(((labels > 0.5).sum(dim=1) == 1).all()):
            raise RareganError("each label row must name exactly one class of the diffusion model")
        return (labels > 0.5).float().argmax(dim=1)

    def predict(self, x, t: int, y: torch.Tensor | None, precision: str) -> torch.Tensor:
        """The noise the model predicts in `x` at timestep t (guided toward classes `y`)."""
        device = x.device
        steps = torch.full((len(x),), t, device=device, dtype=torch.long)
        guidance = self.hp.get("guidance", 1.0)
        with autocast(device, precision):
            if y is None:
                return self.unet(x, steps).float()
            if guidance == 1.0:
                return self.unet(x, steps, class_labels=y).float()
            null = torch.full_like(y, self.label_dim)
            both = self.unet(
                torch.cat([x, x]), torch.cat([steps, steps]), class_labels=torch.cat([y, null])
            ).float()
        eps_class, eps_null = both.chunk(2)
        return eps_null + guidance * (eps_class - eps_null)

    @torch.no_grad()
    def sample(
        self, n: int, seed: int = 0, labels: torch.Tensor | None = None, batch: int = 64
    ) -> torch.Tensor:
        classes = self.class_indices(n, labels)
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
            y = None if classes is None else classes[start : start + batch].to(device)
            for t in schedule.timesteps:
                eps = self.predict(x, int(t), y, precision)
                x, _ = schedule.step(eps, int(t), x)
                if bar is not None:
                    bar.update()
            out.append(x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
        if bar is not None:
            bar.close()
        if not out:
            return torch.zeros(0, 1, r, r, dtype=torch.uint8)
        return torch.cat(out)


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
    label_dim = saved.get("label_dim", 0)
    unet = make_unet(hp, label_dim)
    unet.load_state_dict(state)
    return DiffusionSampler(unet.to(device), hp, label_dim=label_dim), summary


def export_source(run: Path, out: Path) -> Path:
    """A finished diffusion run as a transfer source to commit (`raregan gan --generator diffusion
    --export-source DIR`): its averaged weights and what it learned from and what made it, without
    checkpoints (a fine-tune loads only the averaged weights); its fingerprint id is the run's."""
    run = Path(run)
    if not is_done(run) or not (run / GENERATOR).is_file():
        raise RareganError(f"{run} is not a finished diffusion run (it needs DONE and {GENERATOR})")
    return write_exported(run, out, lambda tmp: tmp / GENERATOR)

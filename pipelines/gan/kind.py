"""The progressive-growing GAN as a generator kind (pipelines/generators): train, fingerprint, load."""

from __future__ import annotations

from pathlib import Path

import torch

from pggan import Generator, generate
from pipelines.gan.run import gan_fingerprint, gan_precision, train_gan
from pipelines.gan.synth import load_generator

SECTION = "gan"


class GanSampler:
    """A PGGAN generator (G_ema, or a checkpoint's) as a Sampler: fixed latents of a seed."""

    def __init__(self, G: Generator):
        self.G = G
        self.resolution = G.resolution
        self.label_dim = G.label_dim

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        return generate(self.G, n, seed=seed, labels=labels)


def train(prepared, classes, fraction, cfg, run, opts=None, checkpoint_every=None) -> Path:
    return train_gan(prepared, classes, fraction, cfg, run, opts, checkpoint_every)


def fingerprint(prepared, cfg, classes, fraction, rows, precision="32", source_id=None) -> dict:
    return gan_fingerprint(prepared, cfg, classes, fraction, rows, precision, source_id)


def precision(accelerator: str, setting: str) -> str:
    return gan_precision(accelerator, setting)


def load(run: Path, device="cpu", checkpoint: Path | None = None, raw: bool = False):
    G, summary = load_generator(run, device, checkpoint, raw)
    return GanSampler(G), summary

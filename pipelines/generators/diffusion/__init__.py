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

from pipelines.generators.diffusion.net import (
    ARCHITECTURE,
    GENERATOR,
    SECTION,
    autocast,
    ddim_schedule,
    make_unet,
    noise_schedule,
    precision,
    read_diffusion_checkpoint,
    sampling_precision,
)
from pipelines.generators.diffusion.sampling import DiffusionSampler, export_source, load
from pipelines.generators.diffusion.training import (
    Diffusion,
    fingerprint,
    source_run,
    step_batch,
    step_generator,
    total_steps,
    train,
)

__all__ = [
    "ARCHITECTURE", "GENERATOR", "SECTION", "Diffusion", "DiffusionSampler", "autocast",
    "ddim_schedule", "export_source", "fingerprint", "load", "make_unet", "noise_schedule",
    "precision", "read_diffusion_checkpoint", "sampling_precision", "source_run", "step_batch",
    "step_generator", "total_steps", "train",
]  # fmt: skip

"""The diffusion kind's network, noise schedules and precision: MONAI's UNet and schedulers, sized by
the config's diffusion section; what training and sampling share."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.errors import RareganError
from pipelines.machine import mixed_precision

SECTION = "diffusion"
GENERATOR = "generator_ema.pt"


ARCHITECTURE = ("resolution", "channels", "attention_levels", "num_res_blocks", "norm_num_groups")
ARCHITECTURE += ("head_channels", "timesteps", "schedule")


def make_unet(hp: dict, label_dim: int = 0) -> torch.nn.Module:
    """MONAI's 2-D DiffusionModelUNet for one-channel images, sized by the diffusion section; with
    `label_dim` classes, a class embedding of label_dim + 1 entries (the last: classifier-free
    guidance's null class)."""
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
        num_class_embeds=label_dim + 1 if label_dim else None,
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


def autocast(device: torch.device, precision: str):
    """bf16 autocast for precision "bf16" (CPU or GPU), fp16 AMP for "16", else nothing."""
    if precision in ("bf16", "16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def precision(accelerator: str, setting: str) -> str:
    """diffusion.precision on this machine: bf16 where native ("auto"), else fp32."""
    return mixed_precision(accelerator, setting, "diffusion.precision", "bf16")


def sampling_precision(device: torch.device, setting: str) -> str:
    """The autocast of sampling: diffusion.precision resolved for the device sampling (bf16 where
    native under "auto"; the DDIM update itself stays in fp32)."""
    accelerator = "gpu" if torch.device(device).type == "cuda" else "cpu"
    return mixed_precision(accelerator, setting, "diffusion.precision", "bf16")


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

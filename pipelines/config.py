"""Run configs: YAML presets over built-in defaults; unknown keys are user errors."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipelines.errors import RareganError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Every key a config may set; a preset overrides some of them.
DEFAULTS: dict = {
    "data": {"size": 64, "resize": "pad", "val": 0.1, "test": 0.1, "seed": 0},
    "filters": {
        "names": ["gaussian_blur", "unsharp_mask", "minimum_filter"],
        "blur_kernel": 5,
        "unsharp_sigma": 2.0,
        "unsharp_amount": 1.0,
        "min_size": 3,
    },
    "gan": {
        "resolution": 64,
        "channels": [128, 128, 128, 64, 32],
        "latent_dim": 128,
        "kimg_per_phase": 6.0,
        "batch_per_resolution": {4: 32, 8: 32, 16: 32, 32: 16, 64: 16, 128: 8, 256: 4},
        "lr": 0.001,
        "gp_lambda": 10.0,
        "drift": 0.001,
        "ema_beta": 0.999,
        "checkpoint_every_kimg": 5.0,
        "min_images": 8,
        "seed": 0,
    },
    "classify": {
        "model": "densenet121",
        "head": None,
        "epochs": 10,
        "batch_size": 32,
        "lr": 0.001,
        "weight_decay": 0.0001,
        "optimizer": "adamw",
        "warmup_epochs": 1,
        "patience": 5,
        "monitor": "val_auc",
        "augment": {"hflip": 0.0, "rotate": 10.0, "crop_scale": [0.8, 1.0]},
        "balanced_sampling": False,
        "pos_weight": False,
        "ordinal_head": "corn",
        "num_workers": 0,
        "seed": 0,
    },
    "compare": {
        "fractions": [25, 50, 75, 100],
        "arms": ["none", "standard", "gan"],
        "seeds": [0, 1, 2],
        "classes": ["Lung Lesion", "Pleural Other", "Fracture"],
        "synth_ratio": 3.0,
        "conditional_gan": False,
        "label_rows": "gan",
        "n_boot": 1000,
    },
}


def _merge(base: dict, over: dict, where: str, source: str) -> dict:
    """Deep-merge `over` into a copy of `base`, refusing keys `base` does not have."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if key not in base:
            known = ", ".join(map(str, base))
            raise RareganError(f"{source}: unknown config key '{where}{key}'; known keys: {known}")
        if isinstance(base[key], dict) and key != "batch_per_resolution":
            if not isinstance(value, dict):
                raise RareganError(f"{source}: config key '{where}{key}' must be a mapping")
            out[key] = _merge(base[key], value, f"{where}{key}.", source)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the preset file (a name in configs/ or a path), then `overrides`."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.suffix and not p.exists():
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.is_file():
            raise RareganError(
                f"config file {path} not found; presets: {', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))}"
            )
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise RareganError(f"config file {p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise RareganError(f"config file {p} must hold a mapping of sections")
        cfg = _merge(cfg, loaded, "", str(p))
    if overrides:
        cfg = _merge(cfg, overrides, "", "command line")
    cfg["gan"]["batch_per_resolution"] = {
        int(k): int(v) for k, v in cfg["gan"]["batch_per_resolution"].items()
    }
    return cfg

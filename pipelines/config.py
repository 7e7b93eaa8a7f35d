"""Run configs: YAML presets over built-in defaults; unknown keys are user errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from pipelines.errors import RareganError
from pipelines.machine import PRECISIONS

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
        "final_kimg": None,  # length of the last (full-resolution) phase; None: kimg_per_phase
        "batch_per_resolution": {4: 32, 8: 32, 16: 32, 32: 16, 64: 16, 128: 8, 256: 4},
        "lr": 0.001,
        "gp_lambda": 10.0,
        "drift": 0.001,
        "ema_beta": 0.999,
        "checkpoint_every_kimg": 5.0,
        "keep_checkpoints": 3,  # kimg-stamped checkpoints kept beside last.ckpt (the oldest go)
        "min_images": 8,
        # What D sees, reals and fakes, is augmented (pggan.augment): ops named in `policy`
        # (translation, cutout, color, affine; "" or none: off), each with probability p per image;
        # adaptive: p moves (from `p`) so that E[sign(D(real))] stays near `target`, by at most
        # 1 per `speed_kimg` thousand images (10: p can go 0 → 1 within half a 20 kimg schedule).
        "augment": {"policy": "", "p": 0.0, "adaptive": False, "target": 0.6, "speed_kimg": 10.0},
        # 32 by default: bf16 GANs matched fp32 in C2ST, FID and MS-SSIM but reached a lower recall
        # (0.55 vs 0.70 over 2 seeds each, benchmarks/bench_gan_bf16_fidelity.py) for 1.4x speed.
        # bf16: autocast where native (else a warning and fp32); auto: bf16 where native.
        "precision": "32",
        # A GAN of several classes draws class c's images in proportion to n_c^(1 - class_balance)
        # (Kang et al. 2020's p ∝ n^q, q = 1 - class_balance): 0 in the data's proportions, 1 every
        # class equally often (the rare class's images repeat in each pass, rounded to whole copies).
        "class_balance": 0.0,
        # Transfer (Wang et al. 2018): a finished GAN run of the same architecture, trained on
        # other (abundant) images, whose weights start this GAN; it then trains only its final,
        # full-resolution phase (final_kimg). freeze_d: D's highest-resolution levels kept fixed
        # while it does (FreezeD, Mo et al. 2020; 0: none).
        "init_from": None,
        "freeze_d": 0,
        # ema_continue: a fine-tune's G_ema averages on from the source's at ema_beta from its first
        # step, instead of restarting the ramp that lets a fresh run forget its random start.
        "ema_continue": False,
        # Several classes: one label-conditional GAN (true), or one GAN of their images pooled,
        # without labels (false: a source for transfer, e.g. every grade but the rare one).
        "conditional": True,
        # How G and D change resolution: nearest (the paper: nearest-neighbour up, box down) or
        # lowpass (the binomial [1, 3, 3, 1] filter both ways, as StyleGAN, Karras et al. 2019).
        "resample": "nearest",
        "seed": 0,
    },
    # which generator kind the GAN arms' units train (pipelines/generators): pggan or diffusion
    "generator": {"kind": "pggan"},
    # the diffusion kind (pipelines/generators/diffusion/): a DDPM with MONAI's UNet, DDIM samples
    "diffusion": {
        "resolution": 64,
        "channels": [32, 64, 128, 128],  # per UNet level (4.3 M parameters at 64 px)
        "attention_levels": [False, False, False, True],  # self-attention at the coarsest level
        "num_res_blocks": 1,
        "norm_num_groups": 16,
        "head_channels": 32,
        "timesteps": 1000,
        "schedule": "linear_beta",  # MONAI's: linear_beta, scaled_linear_beta, sigmoid_beta, cosine
        "sample_steps": 50,  # DDIM steps per sample
        "batch_size": 16,
        "lr": 0.0002,
        "ema_beta": 0.999,
        "kimg": 100.0,  # thousands of training images seen
        "checkpoint_every_kimg": 10.0,
        "keep_checkpoints": 3,
        "precision": "auto",  # bf16 autocast where native (CPU AVX512-BF16/AMX, GPU), else fp32
        "min_images": 8,
        "init_from": None,  # a finished diffusion run to fine-tune (e.g. of the abundant class)
        # several classes: one model conditioned on the class (a learned embedding), trained with
        # the label dropped to a null class for a share p_uncond of the images, and sampled with
        # classifier-free guidance ε = ε_null + guidance · (ε_class − ε_null) (Ho & Salimans 2022:
        # p_uncond 0.1–0.2; guidance 1 is the conditional model alone, > 1 pushes samples toward
        # their class); false: the classes pooled, without labels (a transfer source). Guidance 1:
        # on Kermany viral (docs/results/diffusion-cfg-kermany-viral) 1.5 and 3 cost recall and C2ST.
        "conditional": True,
        "p_uncond": 0.1,
        "guidance": 1.0,
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
        "monitor": "auto",  # auto: val_auc_studied with --classes, else val_auc
        "augment": {"hflip": 0.0, "rotate": 10.0, "crop_scale": [0.8, 1.0]},
        "balanced_sampling": False,
        "pos_weight": False,
        "equal_steps": True,
        "precision": "auto",  # auto: AMP on GPU, bf16 on CPUs with native bf16, else fp32; or bf16, 32
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
        "ratio_grid": [0.5, 1.0, 2.0, 4.0],  # the gan_ratio arm's choices (× the real positives)
        "conditional_gan": False,
        "condition_on": [],  # abundant classes each GAN also learns (label-conditional), never synthesized
        "transfer_from": [],  # classes whose GAN (pooled, per fraction and seed) each GAN fine-tunes
        "transfer_kimg": 8.0,  # the fine-tune's final phase (gan.final_kimg of the GAN units)
        "label_rows": "gan",
        "n_boot": 1000,
    },
}


# Numbers that must be > 0 (in lists and mappings: every item); every other number must be ≥ 0.
POSITIVE = frozenset(
    {
        "data.size",
        "filters.blur_kernel",
        "filters.unsharp_sigma",
        "filters.min_size",
        "gan.resolution",
        "gan.channels",
        "gan.latent_dim",
        "gan.kimg_per_phase",
        "gan.batch_per_resolution",
        "gan.lr",
        "gan.checkpoint_every_kimg",
        "gan.keep_checkpoints",
        "gan.min_images",
        "gan.augment.speed_kimg",
        "classify.epochs",
        "classify.batch_size",
        "classify.lr",
        "compare.fractions",
        "compare.synth_ratio",
        "compare.ratio_grid",
        "compare.transfer_kimg",
        "compare.n_boot",
        "diffusion.resolution",
        "diffusion.channels",
        "diffusion.num_res_blocks",
        "diffusion.norm_num_groups",
        "diffusion.head_channels",
        "diffusion.timesteps",
        "diffusion.sample_steps",
        "diffusion.batch_size",
        "diffusion.lr",
        "diffusion.kimg",
        "diffusion.checkpoint_every_kimg",
        "diffusion.keep_checkpoints",
        "diffusion.min_images",
    }
)
# Lists of numbers that may hold fractions although their defaults are whole numbers.
FRACTIONAL = frozenset({"compare.fractions", "compare.ratio_grid"})
# kind of value → (singular, plural) words for messages
KINDS = {
    "flag": ("true or false", "true/false values"),
    "int": ("a whole number", "whole numbers"),
    "number": ("a number", "numbers"),
    "text": ("text", "texts"),
    "optional text": ("text or null", "texts or nulls"),
    "optional number": ("a number or null", "numbers or nulls"),
}
OPTIONAL_NUMBERS = frozenset({"gan.final_kimg"})  # null by default, a number > 0 when set


def _kind(default) -> str:
    """The kind of value a key takes, judged from its default."""
    if default is None:
        return "optional text"
    if isinstance(default, bool):
        return "flag"
    if isinstance(default, int):
        return "int"
    return "number" if isinstance(default, float) else "text"


def _fits(value, kind: str, positive: bool) -> bool:
    """Whether one value is of `kind` and, for numbers, finite and > 0 (positive) or ≥ 0."""
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "optional number":
        return value is None or _fits(value, "number", True)
    if kind in ("text", "optional text"):
        return isinstance(value, str) or (kind == "optional text" and value is None)
    if isinstance(value, bool) or not isinstance(value, int if kind == "int" else int | float):
        return False
    return math.isfinite(value) and (value > 0 if positive else value >= 0)


def _check_value(key: str, value, source: str) -> None:
    """Refuse a value for config `key` (e.g. "gan.channels") unlike its default: type or range."""
    default = DEFAULTS
    for part in key.split("."):
        default = default[part]
    positive = key in POSITIVE
    if isinstance(default, dict):  # batch_per_resolution: {resolution: batch size}
        shape, kind = "a mapping", "int"
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else None
    elif isinstance(default, list):
        kind = "number" if key in FRACTIONAL else _kind(default[0]) if default else "text"
        shape = "a list"
        items = value if isinstance(value, list) else None
    else:
        kind = "optional number" if key in OPTIONAL_NUMBERS else _kind(default)
        shape, items = "", [value]
    if items is not None and all(_fits(v, kind, positive) for v in items):
        return
    singular, plural = KINDS[kind]
    bound = (" > 0" if positive else " ≥ 0") if kind in ("int", "number") else ""
    bound = " > 0" if kind == "optional number" else bound
    what = f"{shape} of {plural}{bound}" if shape else f"{singular}{bound}"
    raise RareganError(f"{source}: config key '{key}' must be {what}, not {value!r}")


def _check_choices(cfg: dict, source: str) -> None:
    """Values whose type is right but whose range or name is not: augmentation, class balance,
    precision and resampling."""
    aug, bad = cfg["gan"]["augment"], None
    if aug["policy"].strip() not in ("", "none"):
        from pggan.augment import parse_policy  # torch loads only when a policy is set

        try:
            parse_policy(aug["policy"])
        except ValueError as err:
            bad = f"config key 'gan.augment.policy': {err}"
    if not aug["p"] <= 1:
        bad = f"config key 'gan.augment.p' must be a probability in [0, 1], not {aug['p']!r}"
    elif (aug["p"] > 0 or aug["adaptive"]) and aug["policy"].strip() in ("", "none"):
        bad = (
            "config key 'gan.augment.p' (or adaptive) needs gan.augment.policy, the ops to apply: "
            "e.g. --set gan.augment.policy=translation,cutout,color,affine"
        )
    if not 0 < aug["target"] < 1:
        bad = f"config key 'gan.augment.target' must be in (0, 1), not {aug['target']!r}"
    if not cfg["gan"]["class_balance"] <= 1:
        value = cfg["gan"]["class_balance"]
        bad = f"config key 'gan.class_balance' must be in [0, 1], not {value!r}"
    if cfg["gan"]["precision"] not in PRECISIONS:
        value = cfg["gan"]["precision"]
        bad = f"config key 'gan.precision' must be one of {', '.join(PRECISIONS)}, not {value!r}"
    if cfg["gan"]["resample"] != "nearest":
        from pggan.layers import RESAMPLE  # torch loads only when it is set

        if (value := cfg["gan"]["resample"]) not in RESAMPLE:
            bad = f"config key 'gan.resample' must be one of {', '.join(RESAMPLE)}, not {value!r}"
    d = cfg["diffusion"]
    if d["precision"] not in PRECISIONS:
        value = d["precision"]
        bad = f"config key 'diffusion.precision' must be one of {', '.join(PRECISIONS)}, not {value!r}"
    if d["schedule"] not in DIFFUSION_SCHEDULES:
        value = d["schedule"]
        bad = f"config key 'diffusion.schedule' must be one of {', '.join(DIFFUSION_SCHEDULES)}, not {value!r}"
    if not d["ema_beta"] < 1:
        bad = f"config key 'diffusion.ema_beta' must be in [0, 1), not {d['ema_beta']!r}"
    if not d["p_uncond"] < 1:
        bad = f"config key 'diffusion.p_uncond' must be in [0, 1), not {d['p_uncond']!r}"
    if d["p_uncond"] == 0 and d["guidance"] != 1:
        bad = (
            "config key 'diffusion.p_uncond' 0 never trains the null class that guidance "
            f"{d['guidance']!r} samples with; give p_uncond > 0 or guidance 1"
        )
    from pipelines.arms import GENERATOR_KINDS

    if (value := cfg["generator"]["kind"]) not in GENERATOR_KINDS:
        bad = f"config key 'generator.kind' must be one of {', '.join(GENERATOR_KINDS)}, not {value!r}"
    if bad:
        raise RareganError(f"{source}: {bad}")


DIFFUSION_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")


def _check_fine_tune(cfg: dict, source: str) -> None:
    """A fine-tune's settings need a GAN to fine-tune; checked once everything is merged (a file's
    freeze_d may meet the command line's --init-from)."""
    if cfg["gan"]["init_from"] is not None or cfg["compare"]["transfer_from"]:
        return
    for key in ("freeze_d", "ema_continue"):
        if cfg["gan"][key]:
            raise RareganError(
                f"{source}: config key 'gan.{key}' needs gan.init_from (a GAN run to fine-tune)"
            )


def _merge(base: dict, over: dict, where: str, source: str) -> dict:
    """Deep-merge `over` into a copy of `base`, refusing unknown keys and values unlike the defaults."""
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
            if key == "precision" and value == 32 and not isinstance(value, bool):
                value = "32"  # YAML reads `precision: 32` as a number
            _check_value(f"{where}{key}", value, source)
            out[key] = value
    return out


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where it is."""
    mark = getattr(err, "problem_mark", None)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the preset file (a name in configs/ or a path), then `overrides`."""
    cfg, source = copy.deepcopy(DEFAULTS), "defaults"
    if path is not None:
        p = Path(path)
        if not p.suffix and not p.exists():
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.is_file():
            raise RareganError(
                f"config file {path} not found; presets: {', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))}"
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise RareganError(f"config file {p} is not UTF-8 text; give a YAML file") from None
        except yaml.YAMLError as err:
            raise RareganError(f"config file {p} is not valid YAML: {_yaml_problem(err)}") from None
        if loaded is None:  # empty, or comments only: training on the defaults would surprise
            raise RareganError(
                f"config file {p} is empty (no settings); give sections such as `gan:` or "
                "`classify:`, or a preset name"
            )
        if not isinstance(loaded, dict):
            raise RareganError(f"config file {p} must hold a mapping of sections")
        source = str(p)
        cfg = _merge(cfg, loaded, "", source)
        _check_choices(cfg, source)
    if overrides:
        source = "command line"
        cfg = _merge(cfg, overrides, "", source)
        _check_choices(cfg, source)
    _check_fine_tune(cfg, source)
    cfg["gan"]["batch_per_resolution"] = {
        int(k): int(v) for k, v in cfg["gan"]["batch_per_resolution"].items()
    }
    return cfg

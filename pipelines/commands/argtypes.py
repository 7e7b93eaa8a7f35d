"""The command line's value types: counts, numbers, folders, Lightning devices, accelerators and
strategies, each refused by argparse in one line naming the value."""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: --help must not load torch
    pass


def devices_arg(text: str) -> int | str:
    """Lightning's devices: a count ≥ 1, -1 (all), auto, or device indices like 0,1."""
    if text.isdigit() and int(text) > 0:
        return int(text)
    if text in ("auto", "-1") or re.fullmatch(r"\d+(,\d+)+", text):
        return text
    raise argparse.ArgumentTypeError(
        f"must be a count ≥ 1, -1 (all), auto or device indices like 0,1; not {text!r}"
    )


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def accelerator_arg(text: str) -> str:
    """Lightning's accelerator, refused when it names hardware torch cannot see here."""
    if text not in ACCELERATORS:
        raise argparse.ArgumentTypeError(
            f"unknown accelerator {text!r}; use one of {', '.join(ACCELERATORS)}"
        )
    if text in ("auto", "cpu"):
        return text
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if not {"cuda": cuda, "mps": mps, "gpu": cuda or mps}[text]:
        raise argparse.ArgumentTypeError(
            f"{text} asked for, but torch sees no such device here; use --accelerator cpu or auto"
        )
    return text


def strategy_arg(text: str) -> str:
    """A Lightning strategy: auto or a name Lightning registers (ddp, ddp_spawn, fsdp, …)."""
    if text == "auto":
        return text
    from pytorch_lightning.strategies import StrategyRegistry

    if text not in StrategyRegistry:
        names = [n for n in sorted(StrategyRegistry) if "find_unused" not in n]
        raise argparse.ArgumentTypeError(
            f"unknown strategy {text!r}; use auto or one of Lightning's: {', '.join(names)}"
        )
    return text


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0."""
    return number_arg(text, int, 0, above=True)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number ≥ 0."""
    return number_arg(text, int, 0)


def folds_arg(text: str) -> int:
    """An argparse type: a cross-validation fold count, 0 (none) or a whole number ≥ 2."""
    value = non_negative_int(text)
    if value == 1:
        raise argparse.ArgumentTypeError("must be 0 (no cross-validation) or ≥ 2 folds, not 1")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return number_arg(text, float, 0, above=True)


def number_arg(text: str, kind: type, low: float, above: bool = False) -> int | float:
    """`text` as a finite `kind` (int or float) ≥ `low` (> `low` when `above`); argparse's error if not."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (above and value == low):
        word = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(
            f"must be {word} {'>' if above else '≥'} {low:g}, not {text!r}"
        )
    return value


def folder_arg(text: str) -> Path:
    """A folder raregan may create or write in; refused when it or a folder above it is a file,
    or when the nearest existing folder is not writable (nothing is created here)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot make folder {path}: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot make or write folder {path}: {existing} is not writable"
        )
    return path

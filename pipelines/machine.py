"""What this machine offers a run: its device, native bf16, and the C library settings speed depends on."""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import TYPE_CHECKING

from pipelines.errors import RareganError

if TYPE_CHECKING:
    import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 1 << 31  # freed heap memory kept before any is returned to the kernel


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse; True if it was set.

    By default glibc serves large blocks with mmap and gives them back to the kernel when they are
    freed, and trims the heap's free top. A CPU training step allocates and frees the same
    multi-MiB activations every step, so each step faulted every page of them in afresh (the profile
    of a 64 px PGGAN step showed fill_ of a fresh 16 MiB activation at about a tenth of memory
    speed). Served from the heap and kept, the pages are reused: `benchmarks/bench_pggan_speed.py`
    measured +14–21 % img/s. The cost: the process keeps its peak heap instead of shrinking after
    it. Elsewhere than glibc (macOS, musl) this does nothing and returns False.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok


def run_device() -> torch.device:
    """The device inference runs on: CUDA when torch sees a GPU, else the CPU."""
    import torch  # imported here: the CLI checks its arguments before torch loads

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("auto", "bf16", "32")  # what classify.precision and gan.precision may say


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): only then is bf16 faster.

    Without it oneDNN emulates bf16 convolutions, measured here 36× slower than fp32.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def mixed_precision(accelerator: str, setting: str, key: str, gpu_auto: str = "16") -> str:
    """The autocast dtype a run trains in: "16", "bf16" or "32" (no autocast).

    "32" is fp32 everywhere. On a GPU "auto" gives `gpu_auto` and "bf16" bf16; on the CPU bf16
    only where it is native ("auto" or "bf16"), else fp32, with a one-line warning when bf16 was
    asked for. `key` (e.g. "gan.precision") names the setting in the error for an unknown value.
    """
    if setting not in PRECISIONS:
        raise RareganError(f"{key} {setting!r}: use auto, bf16 or 32")
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if setting == "32":
        return "32"
    if gpu:
        return "bf16" if setting == "bf16" else gpu_auto
    if cpu_bf16():
        return "bf16"
    if setting == "bf16":
        print(
            f"raregan: warning: {key} bf16 asked for, but this CPU has no native bf16 "
            "(AVX512-BF16/AMX); training in fp32",
            file=sys.stderr,
        )
    return "32"

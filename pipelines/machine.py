"""Process-wide settings of the machine's C library that training speed depends on."""

from __future__ import annotations

import ctypes
import platform

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

"""reuse_freed_memory: large blocks come from glibc's heap instead of fresh kernel mappings."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from pipelines.machine import reuse_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mapped_while_held(nbytes):
    block = libc.malloc(nbytes)
    mapped = libc.mallinfo2().hblkhd
    libc.free(block)
    return mapped

size = 16 * 1024 * 1024  # a 64 px activation of the PGGAN step in bf16
before = mapped_while_held(size)
print(before >= size, reuse_freed_memory(), mapped_while_held(size) < size)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)
def test_after_reuse_freed_memory_a_16_mib_block_is_no_longer_a_fresh_mapping() -> None:
    """In a fresh process glibc maps a 16 MiB block; after the call it serves it from the heap."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "True", "True"]


def test_cli_reuses_freed_memory_before_running_a_command(monkeypatch) -> None:
    """Every command trains or evaluates with the setting on (it is process-wide, set once)."""
    from pipelines import cli

    calls = []
    monkeypatch.setattr(cli, "reuse_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["data", "--data", "/nonexistent/raregan-path"]) == 2  # a user error, after it
    assert calls == [1]

"""The Makefile's entry points, read with `make -n` (printed, never run)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(*args: str) -> list[str]:
    done = subprocess.run(
        ["make", "-n", "compare", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_make_compare_says_when_it_runs_on_the_phantoms_with_the_demo_preset():
    """`make compare ARGS=…` without DATA ran on the phantoms with cpu-demo and said nothing."""
    lines = dry_run('ARGS=--classes "Lung Lesion" --list-cells')
    notes = [ln for ln in lines if "make compare: on the demo phantoms" in ln]
    assert len(notes) == 1 and "configs/cpu-demo.yaml" in notes[0] and "DATA=" in notes[0]
    assert any("raregan compare --data runs/phantoms --config cpu-demo" in ln for ln in lines)
    for own in (["DATA=/data/knee", "ARGS=--list-cells"], ["ARGS=--data /data/knee --list-cells"]):
        assert not any("demo phantoms" in ln for ln in dry_run(*own)), own

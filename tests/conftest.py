"""Shared fixtures: where the real data lives (../shared/data beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAREGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real X-ray data (read-only); the suite needs it, as CI has it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; put ../shared beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small CheXpert-layout phantom set (400 images, 64 px), written once per test session."""
    from pipelines.data.phantoms import write_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    prevalence = {"Fracture": 0.12, "Lung Lesion": 0.08, "Pleural Other": 0.06}
    return write_phantoms(out, n=400, size=64, seed=0, prevalence=prevalence)

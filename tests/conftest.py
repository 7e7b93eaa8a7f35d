"""Shared fixtures: where the real data lives (../shared/data beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAREGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_gray(paths: list[Path], size: int, resample: str = "BILINEAR") -> np.ndarray:
    """Decode images to uint8 grayscale at size × size px (PIL resampling by name), stacked (N, H, W)."""
    from PIL import Image

    out = []
    for path in paths:
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("L").resize((size, size), getattr(Image, resample))))
    return np.stack(out)


def touch_tree(root: Path, files: dict[str, list[str]]) -> Path:
    """root/<folder>/<name> as empty files; folder keys may hold slashes."""
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / folder / name).write_bytes(b"")
    return root


def quiet_trainer(**kwargs):
    """A Lightning Trainer on CPU with no logger, checkpoints, progress bar or summary."""
    import pytorch_lightning as pl

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return pl.Trainer(accelerator="cpu", enable_model_summary=False, **quiet, **kwargs)


# Set by .ci/run: the real-data tests must run (missing data fails them) instead of skipping.
REQUIRE_DATA = os.environ.get("RAREGAN_REQUIRE_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real X-ray data (read-only). Without it the real-data tests skip, with one line
    saying where to put it; with RAREGAN_REQUIRE_DATA=1 (as CI runs) they fail instead."""
    if not SHARED_DATA.is_dir():
        where = (
            f"real data not found at {SHARED_DATA}: put shared/data beside the checkout "
            "(../shared/data) or set RAREGAN_SHARED_DATA to its folder"
        )
        if REQUIRE_DATA:
            pytest.fail(f"{where} (RAREGAN_REQUIRE_DATA is set)")
        pytest.skip(where)
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small CheXpert-layout phantom set (400 images, 64 px), written once per test session."""
    from pipelines.data.phantoms import write_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    prevalence = {"Fracture": 0.12, "Lung Lesion": 0.08, "Pleural Other": 0.06}
    return write_phantoms(out, n=400, size=64, seed=0, prevalence=prevalence)


TINY = """
gan:
  resolution: 16
  channels: [16, 16, 8]
  latent_dim: 16
  kimg_per_phase: {kimg}
  batch_per_resolution: {{4: 8, 8: 8, 16: 8}}
  checkpoint_every_kimg: {every}
"""


def tiny_config(tmp_path, kimg=0.12, every=0.1):
    """A tiny 16 px GAN preset file (kimg per phase, checkpoint interval)."""
    path = tmp_path / f"tiny-{kimg}-{every}.yaml"
    path.write_text(TINY.format(kimg=kimg, every=every))
    return path


def cli_argv(command, data, out, tmp_path, *extra):
    """argv of `raregan COMMAND` reading `data` into `out`, its store under tmp_path/store, no bars."""
    cache = str(tmp_path / "store")
    return [
        command,
        "--data",
        str(data),
        "--out",
        str(out),
        "--cache",
        cache,
        "--no-progress",
        *extra,
    ]


def gan_argv(phantom_root, tmp_path, out, cfg, *extra):
    """`raregan gan` for Fracture on the phantoms with a config, output and store folder."""
    return cli_argv(
        "gan", phantom_root, out, tmp_path, "--class", "Fracture", "--config", str(cfg), *extra
    )


@pytest.fixture(scope="session")
def finished_run(phantom_root, tmp_path_factory):
    """A finished tiny GAN run for Fracture on the phantoms (16 px, 0.5 kimg), trained once."""
    from pipelines.cli import main

    tmp = tmp_path_factory.mktemp("gan")
    out = tmp / "run"
    assert main(gan_argv(phantom_root, tmp, out, tiny_config(tmp, kimg=0.1, every=0.1))) == 0
    return out


def classify_cnn5(tmp_path, data, out, *extra):
    """`raregan classify` of a 2-epoch cnn5 (the suite's small classifier); its exit code."""
    from pipelines.cli import main

    return main(
        cli_argv("classify", data, out, tmp_path, "--model", "cnn5", "--epochs", "2", *extra)
    )


@pytest.fixture(scope="session")
def phantom_run(phantom_root, tmp_path_factory):
    """A finished one-epoch cnn5 run on the phantoms at 32 px (multilabel)."""
    tmp = tmp_path_factory.mktemp("evalrun")
    out = tmp / "run"
    assert classify_cnn5(tmp, phantom_root, out, "--size", "32", "--epochs", "1") == 0
    return out

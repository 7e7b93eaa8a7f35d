"""A synthetic set on disk (synthetic.csv + images/, written by `raregan synth`) read as train rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipelines.errors import RareganError
from pipelines.runs import is_done

SYNTH_CSV = "synthetic.csv"


def load_synthetic(folder: Path, label_names: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic rows (labels by name, in `label_names` order) and their images (N,1,R,R) uint8."""
    folder = Path(folder)
    if not is_done(folder):
        raise RareganError(
            f"synthetic set {folder} is not finished (no DONE marker); run raregan synth again"
        )
    rows = pd.read_csv(folder / SYNTH_CSV)
    missing = [name for name in label_names if name not in rows.columns]
    if missing:
        raise RareganError(
            f"{folder / SYNTH_CSV} lacks labels {missing} of the dataset; was it made from another dataset?"
        )
    if not rows["synthetic"].astype(bool).all():
        raise RareganError(f"{folder / SYNTH_CSV} has rows not marked synthetic")
    images = np.stack(
        [np.asarray(Image.open(p).convert("L"))[None] for p in image_paths(folder, rows)]
    )
    return rows, images


def image_paths(folder: Path, rows: pd.DataFrame) -> list[Path]:
    """Where each row's image is now: in the set's own images/ (so a set, or the GAN run holding it,
    may move to another folder or machine), else at its recorded path."""
    paths = []
    for recorded in map(Path, rows["path"]):
        here = folder / "images" / recorded.name
        if here.is_file():
            paths.append(here)
            continue
        if not recorded.is_file():
            raise RareganError(
                f"synthetic set {folder}: image {recorded.name} is missing (not in {folder / 'images'} "
                f"nor at {recorded}); delete {folder} and make the set again with raregan synth"
            )
        paths.append(recorded)
    return paths

"""What a classifier arm trains on: the arms, the fraction's real rows, synthetic sets and
filter-bank copies added, and the datasets of train, val and test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, TensorDataset

from pipelines.arms import ARMS, AUGMENT_ARMS, SYNTH_ARMS  # noqa: F401 (re-exported)
from pipelines.data.prefilter import expand
from pipelines.data.prepare import Prepared
from pipelines.data.store import StoreDataset
from pipelines.data.synthetic import load_synthetic
from pipelines.errors import RareganError
from pipelines.runs import data_folder, source_runs


def check_arm(arm: str) -> None:
    """A user error for an arm that does not exist."""
    if arm not in ARMS:
        raise RareganError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")


def assert_no_synthetic(frame: pd.DataFrame, split: str) -> None:
    """Synthetic rows may only ever train: refuse any in val or test."""
    bad = (
        frame["synthetic"].astype(bool).to_numpy()
        | frame["image_id"].astype(str).str.startswith("synthetic:").to_numpy()
    )
    if bad.any():
        raise RareganError(
            f"{int(bad.sum())} synthetic rows found in the {split} split (e.g. {frame['image_id'][bad].iloc[0]}); "
            "synthetic images may only be used for training"
        )


def train_rows(prepared: Prepared, fraction: float, seed: int, classes: list[str]) -> pd.DataFrame:
    """The train rows of the nested fraction (the GAN's mask too); each class needs a test positive."""
    prepared.require_test_positives(classes)
    return prepared.train_fraction(fraction, seed, classes)


def arm_rows(rows: pd.DataFrame, arm: str, classes: list[str]) -> pd.DataFrame:
    """The real train rows an arm trains on: synth_only leaves out every positive of `classes`."""
    if arm != "synth_only":
        return rows
    return rows[~(rows[classes] > 0.5).any(axis=1).to_numpy()]


def check_gan_saw_only(
    folder: Path, synth_rows: pd.DataFrame, rows: pd.DataFrame, data: str = ""
) -> None:
    """Refuse a synthetic set whose GAN, or a GAN it was fine-tuned from (gan.init_from), learned
    from real images of this data outside this run's train rows (a source trained on another data
    set, by its config's folder name, is not compared)."""
    train = set(rows["image_id"].astype(str))
    for gan_run in synth_rows["gan_run"].dropna().unique() if "gan_run" in synth_rows else []:
        summary = Path(gan_run) / "summary.json"
        chain = [Path(gan_run)]
        chain += source_runs(json.loads(summary.read_text())) if summary.is_file() else []
        for run in chain:
            positives = run / "positives.csv"
            if not positives.is_file() or (run != chain[0] and data_folder(run) != data):
                continue  # a set from elsewhere, or a source of other data: nothing to compare
            seen = pd.read_csv(positives, usecols=["image_id"])["image_id"].astype(str)
            outside = sorted(set(seen) - train)
            if outside:
                via = "" if run == chain[0] else f", fine-tuned from {run},"
                raise RareganError(
                    f"the GAN behind synthetic set {folder} ({gan_run}){via} learned from "
                    f"{len(outside)} real images outside this classifier's train rows (e.g. "
                    f"{outside[0]}); train the GAN on the same data, split seed and fraction (or a "
                    "smaller one)"
                )


def filtered_copies(
    prepared: Prepared, rows: pd.DataFrame, classes: list[str], cfg: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The `filters` arm's extra images: the filter-bank copies (originals left out) of the train
    positives of `classes`, each with its source image's label row; (images uint8, labels)."""
    pos = rows[(rows[classes] > 0.5).any(axis=1).to_numpy()]
    expanded, which = expand(prepared.store.array[pos["row"].to_numpy()], cfg)
    labels = np.tile(
        pos[list(prepared.records.label_names)].to_numpy(np.float32),
        (len(which) // max(1, len(pos)), 1),
    )
    keep = np.asarray([w != "original" for w in which])
    return expanded[keep], labels[keep]


def datasets(
    prepared: Prepared,
    rows: pd.DataFrame,
    label_names: list[str],
    synth: list[Path],
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    seen: pd.DataFrame | None = None,
):
    """Train dataset (real store rows + synthetic images + `extra` (images, labels)), val and test.

    `seen`: the real rows the synthetic sets' GANs may have learned from (default `rows`)."""

    def part(frame: pd.DataFrame) -> StoreDataset:
        return StoreDataset(
            prepared.store, frame["row"].to_numpy(), frame[label_names].to_numpy(np.float32)
        )

    parts, n_synth = [part(rows)], 0
    for folder in synth:
        synth_rows, images = load_synthetic(folder, label_names)
        if images.shape[-1] != prepared.store.size:
            raise RareganError(
                f"synthetic images in {folder} are {images.shape[-1]} px but the data store is "
                f"{prepared.store.size} px; synthesize from a GAN of the same resolution"
            )
        data = Path(prepared.records.root).name
        check_gan_saw_only(folder, synth_rows, rows if seen is None else seen, data)
        labels = torch.from_numpy(synth_rows[label_names].to_numpy(np.float32))
        parts.append(TensorDataset(torch.from_numpy(images), labels))
        n_synth += len(synth_rows)
    if extra is not None and len(extra[0]):
        parts.append(TensorDataset(torch.from_numpy(extra[0]), torch.from_numpy(extra[1])))
    val, test = prepared.split("val").frame, prepared.split("test").frame
    assert_no_synthetic(val, "val")
    assert_no_synthetic(test, "test")
    return ConcatDataset(parts), part(val), part(test), n_synth


def check_synthetic_positives(
    labels: np.ndarray, label_names: list[str], classes: list[str]
) -> None:
    """synth_only: each class left out of the real rows needs synthetic positives."""
    for cls in classes:
        if not (labels[:, label_names.index(cls)] > 0.5).any():
            raise RareganError(
                f"the synth_only arm has no positive of {cls!r} left: its real positives are left "
                f"out and the synthetic sets hold none; give --synth sets made by a GAN of {cls!r}"
            )


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that make each label's positives about equally likely (rarest label counts)."""
    pos = np.nan_to_num(labels) > 0.5
    freq = pos.mean(axis=0).clip(1e-6)
    rarest = np.where(pos, 1.0 / freq, 0.0).max(axis=1)
    return np.where(rarest > 0, rarest, 1.0 / max(1e-6, 1.0 - pos.any(axis=1).mean()))


def all_labels(dataset: ConcatDataset) -> np.ndarray:
    """The label matrix of a concatenation of StoreDataset / TensorDataset parts."""
    out = []
    for d in dataset.datasets:
        out.append(d.labels if isinstance(d, StoreDataset) else d.tensors[1].numpy())
    return np.concatenate(out)

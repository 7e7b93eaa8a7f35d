"""From a data path to split records, the decoded store and the leakage report: every stage starts here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data import load_records
from pipelines.data.chexpert import UNCERTAIN
from pipelines.data.labelmap import map_labels, parse_label_map
from pipelines.data.leakage import LeakageReport, leakage_report
from pipelines.data.records import Records
from pipelines.data.splits import assign_splits, nested_fractions
from pipelines.data.store import Store, build_store
from pipelines.errors import RareganError
from pipelines.fingerprints import frame_id


@dataclass
class DataSpec:
    """Everything that decides which images land where: the same spec gives the same split."""

    data: Path
    format: str | None = None
    options: dict = field(default_factory=dict)
    label_map: str | None = None
    rarefy: dict[str, float] = field(default_factory=dict)
    size: int = 64
    resize: str = "pad"
    seed: int = 0
    val: float = 0.1
    test: float = 0.1
    stratify: list[str] | None = None
    studied: tuple[str, ...] = ()  # the rare classes under study: val must hold enough of each
    keep_official: bool = True
    allow_duplicates: bool = False
    cache_dir: Path = Path("runs/store")
    workers: int = 2


@dataclass
class Prepared:
    """Split records (frame columns `split` and `row` = store index), their store and leakage report."""

    records: Records
    store: Store
    leakage: LeakageReport

    @property
    def dataset_name(self) -> str:
        """Short name of the dataset for run folders: "phantoms" or the root folder's name."""
        root = Path(self.records.root)
        return "phantoms" if (root / "phantoms.json").is_file() else root.name

    @property
    def data_id(self) -> str:
        """A content id of the prepared data: the store's content key (file byte sizes, image size,
        resize policy), every image's split and labels. Not where the files are nor their times, so
        a copy of the data on another machine gives the same id (and run fingerprints)."""
        cols = ["image_id", "split", *self.records.label_names]
        return f"{self.store.content_key}:{frame_id(self.records.frame, cols)}"

    def split(self, name: str) -> Records:
        """The records of one split."""
        return self.records.subset(self.records.frame["split"] == name)

    def train_fraction(self, fraction: float, seed: int, classes: list[str] = ()) -> pd.DataFrame:
        """Train rows of the nested fraction: one mask per (data, split seed, fraction) for every stage.

        `classes` must each have a train positive (user error otherwise); they do not change the mask.
        """
        train = self.split("train")
        mask = nested_fractions(train, [fraction], seed, list(classes))[float(fraction)]
        return train.frame[mask]

    def positives(self, cls: str, fraction: float = 100.0, seed: int = 0) -> pd.DataFrame:
        """Train rows positive for `cls` within the nested train fraction (never val/test rows)."""
        rows = self.train_fraction(fraction, seed, [cls])
        rows = rows[(rows[cls] > 0.5).to_numpy()]
        if rows.empty:
            raise RareganError(f"class {cls!r} has 0 positive images in the training split")
        return rows

    def require_test_positives(self, classes: list[str]) -> None:
        """A user error for a studied class without a test positive (it would have no AUC)."""
        test = self.split("test").frame
        for cls in classes:
            self.records.label_index(cls)
            if not (test[cls] > 0.5).any():
                raise RareganError(
                    f"class {cls!r} has no positive images in the test split, so it has no AUC; "
                    "use a larger --test share or another class"
                )


MIN_VAL_POSITIVES, MIN_VAL_PATIENTS = 10, 5


def thin_val_classes(records: Records, split: np.ndarray, studied: Sequence[str]) -> list[str]:
    """Studied classes with fewer than 10 positive images or 5 positive patients in the source's
    own val split (none when the source has no val split of its own)."""
    official = (records.frame["orig_split"].to_numpy() == "val") & (split == "val")
    if not official.any():
        return []
    val = records.frame[official]
    thin = []
    for cls in studied:
        records.label_index(cls)
        pos = val[val[cls] > 0.5]
        if len(pos) < MIN_VAL_POSITIVES or pos["patient"].nunique() < MIN_VAL_PATIENTS:
            thin.append(cls)
    return thin


def unknown_if_uncertain_outside_train(records: Records) -> Records:
    """CheXpert: the uncertainty policy is for training; in val and test an uncertain (-1) label is
    unknown (NaN), so it is never scored as the policy's 1 or 0."""
    if UNCERTAIN not in records.frame:
        return records
    frame = records.frame
    held = frame["split"].isin(["val", "test"]).to_numpy()
    marks = frame[UNCERTAIN].fillna("").astype(str).str.split("|")
    n = 0
    for name in records.label_names:
        hit = held & marks.map(lambda m, name=name: name in m).to_numpy()
        n += int(np.isfinite(frame.loc[hit, name]).sum())
        frame.loc[hit, name] = np.nan
    records.info["uncertain_unknown_in_val_test"] = n
    return records


def load_split(spec: DataSpec) -> Records:
    """Records with a `split` column, label map applied; no pixels decoded."""
    records = load_records(spec.data, spec.format, **spec.options)
    if spec.label_map:
        records = map_labels(records, parse_label_map(spec.label_map))
    if len(records) == 0:
        raise RareganError(f"no images found in {spec.data}")
    split = assign_splits(
        records, spec.val, spec.test, spec.seed, spec.stratify, spec.keep_official
    )
    thin = thin_val_classes(records, split, spec.studied) if spec.keep_official else []
    if thin:  # the source's val cannot select for these classes: carve val from train patients
        official_val = records.frame["orig_split"].to_numpy() == "val"
        records.frame.loc[official_val, "orig_split"] = "train"
        split = assign_splits(records, spec.val, spec.test, spec.seed, list(spec.studied), True)
        records.info["val_carved"] = (
            f"val carved from train patients (stratified on {', '.join(spec.studied)}): the "
            f"source's own val split holds too few positives of {', '.join(thin)} "
            f"(< {MIN_VAL_POSITIVES} images or < {MIN_VAL_PATIENTS} patients); its images train"
        )
    records.frame["split"] = split
    records = unknown_if_uncertain_outside_train(records)
    for label, keep in spec.rarefy.items():
        records = rarefy(records, label, keep, spec.seed)
    return records


def parse_shares(
    text: str | None, flag: str, example: str, allow_zero: bool = False
) -> dict[str, float]:
    """ "viral=0.05,Fracture=0.5" → {"viral": 0.05, "Fracture": 0.5}; a bad or repeated item is a
    user error naming the flag (--rarefy, phantoms --prevalence)."""
    out: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, value = item.rpartition("=")
        name = name.strip()
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not name or not (0.0 <= share <= 1.0) or (share == 0.0 and not allow_zero):
            shares = "[0, 1]" if allow_zero else "(0, 1]"
            raise RareganError(
                f"{flag} item {item!r} must be LABEL=SHARE with SHARE in {shares}, e.g. {example}"
            )
        if name in out:
            raise RareganError(f"{flag} names {name!r} twice; give each label once")
        out[name] = share
    return out


def parse_rarefy(text: str | None) -> dict[str, float]:
    """--rarefy "viral=0.05,Fracture=0.5": the share of train patients each label keeps."""
    return parse_shares(text, "--rarefy", "viral=0.05")


def rarefy(records: Records, label: str, keep: float, seed: int) -> Records:
    """Keep a seeded share `keep` of the train patients positive for `label` (at least one); val/test untouched."""
    records.label_index(label)
    frame = records.frame
    train_pos = (frame["split"] == "train") & (frame[label] > 0.5)
    patients = np.sort(frame.loc[train_pos, "patient"].unique())
    if len(patients) == 0:
        raise RareganError(f"cannot rarefy {label!r}: it has no positive training images")
    rng = np.random.default_rng(seed + 7919)
    kept = rng.choice(patients, size=max(1, round(keep * len(patients))), replace=False)
    drop = (frame["split"] == "train") & frame["patient"].isin(np.setdiff1d(patients, kept))
    out = records.subset(~drop.to_numpy())
    out.info = {**records.info, "rarefied": {**records.info.get("rarefied", {}), label: keep}}
    return out


def prepare(spec: DataSpec, progress: bool = True) -> Prepared:
    """Load, split, decode once into the store, and run the leakage guard (refuses on leaks)."""
    records = load_split(spec)
    store = build_store(
        records.frame["path"].tolist(),
        spec.size,
        spec.resize,
        spec.cache_dir,
        spec.workers,
        progress,
    )
    records.frame["row"] = np.arange(len(records))
    report = leakage_report(
        records.frame["patient"].to_numpy(),
        records.frame["split"].to_numpy(),
        records.frame["row"].to_numpy(),
        store,
        allow_duplicates=spec.allow_duplicates,
    )
    return Prepared(records, store, report)


def split_table(records: Records) -> pd.DataFrame:
    """Images, patients and positives per label for each split (NaN labels counted apart)."""
    rows = []
    frame = records.frame
    for name in ("train", "val", "test"):
        part = frame[frame["split"] == name]
        row = {"split": name, "images": len(part), "patients": part["patient"].nunique()}
        for label in records.label_names:
            col = part[label]
            row[label] = int((col > 0.5).sum())
            n_unknown = int(col.isna().sum())
            if n_unknown:
                row[f"{label} (unknown)"] = n_unknown
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")

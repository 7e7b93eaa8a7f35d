"""The records table every data source returns: one row per image, labels carried by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import RareganError

# Columns every records frame has, before the label columns.
META_COLUMNS = ("path", "patient", "view", "image_id", "orig_split", "synthetic")
TASKS = ("multilabel", "multiclass", "binary", "ordinal")
SPLITS = ("train", "val", "test")


@dataclass
class Records:
    """A records table: `frame` has META_COLUMNS then one float column per label (1 / 0 / NaN).

    - path: absolute image path (str); patient: patient id (str, unique within the source);
      view: "frontal" / "lateral" (or "" when unknown); image_id: id unique within the source;
      orig_split: the source's own split ("train" / "val" / "test") or "" when it has none;
      synthetic: True for GAN-made rows (never allowed in val/test).
    - For multiclass / binary / ordinal tasks the label columns are one-hot (exactly one 1 per row);
      for ordinal tasks they are in grade order.
    """

    frame: pd.DataFrame
    label_names: list[str]
    task: str
    source: str
    root: Path
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        missing = [c for c in (*META_COLUMNS, *self.label_names) if c not in self.frame.columns]
        if missing:
            raise ValueError(f"records frame lacks columns {missing}")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        """The (N, L) float32 label matrix in `label_names` order."""
        return self.frame[list(self.label_names)].to_numpy(dtype=np.float32)

    def targets(self) -> np.ndarray:
        """Class indices (N,) for single-label tasks (argmax of the one-hot labels)."""
        if self.task == "multilabel":
            raise ValueError("multilabel records have no single class index")
        return self.labels.argmax(axis=1).astype(np.int64)

    def subset(self, mask: np.ndarray | pd.Series) -> Records:
        """The rows where `mask` is true, as new Records with the same label space."""
        frame = self.frame.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True)
        return Records(
            frame, list(self.label_names), self.task, self.source, self.root, dict(self.info)
        )

    def label_index(self, name: str) -> int:
        """Column index of a label, or a user error listing the known names."""
        if name not in self.label_names:
            raise RareganError(
                f"unknown class {name!r} for {self.source} data at {self.root}; "
                f"known classes: {', '.join(self.label_names)}"
            )
        return self.label_names.index(name)


def make_frame(rows: dict[str, list], label_names: list[str], labels: np.ndarray) -> pd.DataFrame:
    """Build a records frame from meta columns (missing ones get defaults) and a label matrix."""
    n = len(labels)
    frame = pd.DataFrame(
        {
            "path": rows.get("path", [""] * n),
            "patient": rows.get("patient", [""] * n),
            "view": rows.get("view", [""] * n),
            "image_id": rows.get("image_id", [""] * n),
            "orig_split": rows.get("orig_split", [""] * n),
            "synthetic": rows.get("synthetic", [False] * n),
        }
    )
    for k in ("path", "patient", "view", "image_id", "orig_split"):
        frame[k] = frame[k].astype(str)
    frame["synthetic"] = frame["synthetic"].astype(bool)
    lab = pd.DataFrame(np.asarray(labels, dtype=np.float32), columns=list(label_names))
    return pd.concat([frame, lab], axis=1)


def not_text_error(path: Path, hint: str) -> RareganError:
    """The user error for a file that is not UTF-8 text, naming it and its first undecodable line."""
    where = ""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                where = f" line {number}"
                break
    return RareganError(f"{path}{where} is not UTF-8 text (a binary or garbled file?); {hint}")


def drop_repeated_rows(frame: pd.DataFrame, key: str, csvs: list[Path]) -> tuple[pd.DataFrame, int]:
    """Rows listing an image twice: exact repeats dropped (their count returned); a user error when
    the repeats disagree (the same image as Fracture 1 and Fracture 0), naming the image."""
    repeated = frame.duplicated(key, keep=False).to_numpy()
    if not repeated.any():
        return frame, 0
    exact = frame.duplicated(keep="first")
    conflicting = frame.loc[repeated & ~frame.duplicated(keep=False).to_numpy(), key]
    if len(conflicting):
        where = " / ".join(c.name for c in csvs)
        raise RareganError(
            f"{where} lists image {conflicting.iloc[0]} more than once with different values "
            "(labels or split); keep one row per image"
        )
    return frame.loc[~exact].reset_index(drop=True), int(exact.sum())

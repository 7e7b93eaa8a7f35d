"""Kermany pediatric pneumonia: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}; type in the name.

Patient ids: PNEUMONIA files `personN_bacteria_M` → `personN`; NORMAL files `IM-XXXX-YYYY` →
`IM-XXXX` and `NORMAL2-IM-XXXX-YYYY` → `NORMAL2-IM-XXXX` (the two NORMAL series are numbered
apart); any other NORMAL name → its stem. The source numbers patients within a split, so every id
is prefixed with its split (`train/person12`) and ids of different splits never collide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.folders import list_images, split_folders, subdirs
from pipelines.data.records import Records, make_frame
from pipelines.errors import RareganError

CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
LABELS = {"multiclass": ["normal", "bacterial", "viral"], "binary": ["normal", "pneumonia"]}
NORMAL_PATIENT = r"^((?:NORMAL2-)?IM-\d+)-"
PNEUMONIA_PATIENT = r"^(person\d+)_"
PNEUMONIA_TYPE = r"(?i)_(bacteria|virus)(?:_|\.)"


def class_folders(folder: Path) -> dict[str, Path]:
    """NORMAL / PNEUMONIA folders directly under `folder` (any case), by upper-case name."""
    return {p.name.upper(): p for p in subdirs(folder) if p.name.upper() in CLASS_FOLDERS}


def find_root(path: Path) -> Path | None:
    """The chest_xray folder at or under `path` (also the nested chest_xray/chest_xray), or None."""
    for root in (path, path / "chest_xray", path / "chest_xray" / "chest_xray"):
        if not root.is_dir():
            continue
        if class_folders(root) or any(class_folders(f) for f in split_folders(root).values()):
            return root
    return None


def load(path: str | Path, task: str = "multiclass") -> Records:
    """Index a Kermany chest_xray tree: normal / bacterial / viral, or normal / pneumonia (binary)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RareganError(f"Kermany path {path} does not exist; give the chest_xray folder")
    if task not in LABELS:
        raise RareganError(f"task {task!r} does not fit Kermany data; use one of {list(LABELS)}")
    root = find_root(path)
    if root is None:
        raise RareganError(
            f"no chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}} folders found in {path}"
        )
    splits = split_folders(root) or {"": root}
    paths, split_of, pneumonia, skipped = [], [], [], 0
    for split, folder in splits.items():
        for name, class_dir in class_folders(folder).items():
            images, n_skipped = list_images(class_dir)
            skipped += n_skipped
            paths += images
            split_of += [split] * len(images)
            pneumonia += [name == "PNEUMONIA"] * len(images)
    if not paths:
        raise RareganError(f"no images found under {root}/<split>/{{NORMAL,PNEUMONIA}}")

    paths = pd.Series(paths, dtype=str)
    split_of = pd.Series(split_of, dtype=str)
    is_pneumonia = np.array(pneumonia, dtype=bool)
    names = paths.str.rsplit("/", n=1).str[-1]
    stems = names.str.rsplit(".", n=1).str[0]
    kind = names.str.extract(PNEUMONIA_TYPE, expand=False).str.lower()
    untyped = is_pneumonia & kind.isna().to_numpy()
    if untyped.any():
        raise RareganError(
            f"{paths.iloc[int(np.flatnonzero(untyped)[0])]} is in PNEUMONIA but its name says "
            "neither bacteria nor virus (expected personN_bacteria_M or personN_virus_M)"
        )
    patient = names.str.extract(NORMAL_PATIENT, expand=False)
    patient = patient.where(
        ~pd.Series(is_pneumonia), names.str.extract(PNEUMONIA_PATIENT, expand=False)
    )
    patient = patient.fillna(stems)
    prefix = split_of.where(split_of == "", split_of + "/")

    if task == "binary":
        codes = is_pneumonia.astype(np.int64)
    else:
        codes = np.where(is_pneumonia, np.where(kind.to_numpy() == "virus", 2, 1), 0)
    label_names = LABELS[task]
    labels = np.eye(len(label_names), dtype=np.float32)[codes]
    folder_name = np.where(is_pneumonia, "PNEUMONIA/", "NORMAL/")
    meta = {
        "path": paths,
        "patient": prefix + patient,
        "view": ["frontal"] * len(paths),
        "image_id": prefix + pd.Series(folder_name, dtype=str) + names,
        "orig_split": split_of,
    }
    frame = make_frame(meta, label_names, labels)
    return Records(frame, list(label_names), task, "kermany", root, {"skipped": skipped})

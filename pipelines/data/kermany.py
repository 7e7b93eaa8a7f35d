"""Kermany pediatric pneumonia: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}; type in the name.

Patient ids: PNEUMONIA files `personN_bacteria_M` → `personN`; NORMAL files `IM-XXXX-YYYY` →
`IM-XXXX` and `NORMAL2-IM-XXXX-YYYY` → `NORMAL2-IM-XXXX` (the two NORMAL series are numbered
apart); any other NORMAL name → its stem. The source numbers patients within a split, so every id
is prefixed with its split (`train/person12`) and ids of different splits never collide.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.folders import list_images, skipped_note, split_folders, subdirs
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


KERMANY_NAME = r"(?i)^person\d+_(bacteria|virus)_"  # how the source names its pneumonia files


def is_kermany_tree(root: Path) -> bool:
    """True when a PNEUMONIA folder (at root or in a split) holds a file named as Kermany names
    them (personN_bacteria_M / personN_virus_M): a folder merely named `normal` is not enough."""
    parents = [root, *split_folders(root).values()]
    for folder in parents:
        pneumonia = class_folders(folder).get("PNEUMONIA")
        if pneumonia is None:
            continue
        with os.scandir(pneumonia) as entries:
            if any(entry.is_file() and re.match(KERMANY_NAME, entry.name) for entry in entries):
                return True
    return False


def has_class_folders(root: Path) -> bool:
    """True when NORMAL or PNEUMONIA folders lie at root or in its split folders."""
    return bool(class_folders(root)) or any(class_folders(f) for f in split_folders(root).values())


def find_root(path: Path, detect: bool = True) -> Path | None:
    """The chest_xray folder at or under `path` (also the nested chest_xray/chest_xray), or None.

    Detecting the format (`detect`) asks for Kermany's file names (is_kermany_tree); a user who
    named the format (--format kermany) needs only the NORMAL / PNEUMONIA folders."""
    for root in (path, path / "chest_xray", path / "chest_xray" / "chest_xray"):
        if root.is_dir() and (is_kermany_tree(root) if detect else has_class_folders(root)):
            return root
    return None


def check_other_folders(folder: Path) -> None:
    """A user error when a folder beside NORMAL/PNEUMONIA holds images (a class this reader would
    drop, e.g. COVID19/): read the tree as class folders instead, or move it out."""
    for other in subdirs(folder):
        if other.name.upper() in CLASS_FOLDERS:
            continue
        images, _ = list_images(other)
        if images:
            raise RareganError(
                f"{other} holds {len(images)} images that the Kermany reader ignores (it reads "
                "NORMAL and PNEUMONIA); read the tree as class folders (--format folders) or move "
                f"{other.name}/ out"
            )


def load(path: str | Path, task: str = "multiclass") -> Records:
    """Index a Kermany chest_xray tree: normal / bacterial / viral, or normal / pneumonia (binary)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RareganError(f"Kermany path {path} does not exist; give the chest_xray folder")
    if task not in LABELS:
        raise RareganError(f"task {task!r} does not fit Kermany data; use one of {list(LABELS)}")
    root = find_root(path, detect=False)
    if root is None:
        raise RareganError(
            f"no chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}} folders found in {path}"
        )
    splits = split_folders(root) or {"": root}
    paths, split_of, pneumonia, notes = [], [], [], []
    for split, folder in splits.items():
        check_other_folders(folder)
        for name, class_dir in class_folders(folder).items():
            images, skipped = list_images(class_dir)
            if note := skipped_note(class_dir, len(images), skipped):
                notes.append(note)
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
    return Records(frame, list(label_names), task, "kermany", root, {"skipped_files": notes})

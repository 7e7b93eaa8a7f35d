"""Class folders: root/{train,val,test}/{class}/* or root/{class}/*; the folder name is the label."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.records import SPLITS, Records, make_frame
from pipelines.errors import RareganError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".gif", ".webp")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "test": "test"}
# Default patient id: the file name's stem without a trailing side marker L/R (optionally after
# "_" or "-"), so knee KL `9025994L.png` → `9025994` and both knees of a patient stay together.
DEFAULT_PATIENT_PATTERN = r"^(.+?)(?:[_-]?[LR])?\.[^.]+$"


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: "2" < "10", "grade2" < "grade10"."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def is_image(name: str) -> bool:
    """True for a visible file whose extension is a raster image format the store can decode."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# what a file that is not an image raregan reads is, by extension (for the skipped-file notes)
FILE_KINDS = {".dcm": "DICOM", ".dicom": "DICOM", ".nii": "NIfTI", ".gz": "compressed",
              ".zip": "zip", ".txt": "text", ".csv": "CSV", ".json": "JSON"}  # fmt: skip


def file_kind(name: str) -> str:
    """A skipped file's kind for users: DICOM, NIfTI, … or its extension ('extension-less')."""
    suffix = Path(name).suffix.lower()
    return FILE_KINDS.get(suffix, suffix[1:].upper() if suffix else "extension-less")


def list_images(folder: Path) -> tuple[list[str], dict[str, int]]:
    """Absolute paths of the images directly in `folder` (sorted), and the other visible files
    skipped, counted by kind ({"DICOM": 10})."""
    images, skipped = [], {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and is_image(entry.name):
                images.append(entry.path)
            elif not entry.is_dir() and not entry.name.startswith("."):
                kind = file_kind(entry.name)
                skipped[kind] = skipped.get(kind, 0) + 1
    return sorted(images, key=natural_key), skipped


def skipped_note(class_dir: Path, n_images: int, skipped: dict[str, int]) -> str | None:
    """One line naming what a class folder lost, by kind; a user error when it lost most of its
    files (a class silently shrunk to a few images would change the experiment)."""
    if not skipped:
        return None
    lost = sum(skipped.values())
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
    how = "convert them to PNG or JPEG" if "DICOM" in skipped else "convert or remove them"
    if lost > n_images:
        raise RareganError(
            f"class folder {class_dir}: {lost} of its {lost + n_images} files are not images "
            f"raregan reads ({kinds}); {how}, or the class loses most of its images"
        )
    return f"skipped {kinds} files in {class_dir} ({how} to use them)"


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of `folder`, in natural order."""
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    return sorted(found, key=lambda p: natural_key(p.name))


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders (train/val/valid/test) directly under root, by split name."""
    found = {}
    for folder in subdirs(root):
        split = SPLIT_FOLDERS.get(folder.name.lower())
        if split is not None:
            found.setdefault(split, folder)
    return dict(sorted(found.items(), key=lambda item: SPLITS.index(item[0])))


def has_images(folder: Path) -> bool:
    """True when the folder holds at least one image file directly (stops at the first)."""
    with os.scandir(folder) as entries:
        return any(entry.is_file() and is_image(entry.name) for entry in entries)


def looks_like_folders(root: Path) -> bool:
    """True when root holds class folders of images, with or without split folders above them."""
    splits = split_folders(root)
    parents = list(splits.values()) if splits else [root]
    return any(has_images(c) for p in parents for c in subdirs(p))


def load(path: str | Path, patient_pattern: str | None = None, task: str | None = None) -> Records:
    """Index class folders; integer class names make an ordinal task, two classes a binary one."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise RareganError(f"class-folder root {root} does not exist or is not a folder")
    pattern = patient_pattern or DEFAULT_PATIENT_PATTERN
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise RareganError(f"patient pattern {pattern!r} is not a valid regex: {err}") from None
    if regex.groups != 1:
        raise RareganError(f"patient pattern {pattern!r} must have exactly one (group)")

    splits = split_folders(root) or {"": root}
    rows: dict[str, list] = {"path": [], "orig_split": [], "label": []}
    notes: list[str] = []
    spelled: dict[
        str, str
    ] = {}  # class name folded (case, surrounding spaces) → its first spelling
    for split, folder in splits.items():
        classes = subdirs(folder)
        if not classes:
            raise RareganError(f"{folder} has no class folders; put images in {folder}/<class>/")
        seen_here: dict[str, Path] = {}
        for class_dir in classes:
            key = class_dir.name.strip().casefold()
            if key in seen_here:
                raise RareganError(
                    f"class folders {seen_here[key]} and {class_dir} differ only in case or spaces; "
                    "merge them into one folder"
                )
            seen_here[key] = class_dir
            images, skipped = list_images(class_dir)
            if not images:
                raise RareganError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove the folder"
                )
            if note := skipped_note(class_dir, len(images), skipped):
                notes.append(note)
            rows["path"] += images
            rows["orig_split"] += [split] * len(images)
            rows["label"] += [spelled.setdefault(key, class_dir.name.strip())] * len(images)

    label_names = sorted(set(rows["label"]), key=natural_key)
    if len(label_names) < 2:
        raise RareganError(f"{root} has one class folder {label_names}; a classifier needs two")
    task = task or _default_task(label_names)
    if task not in ("multiclass", "binary", "ordinal"):
        raise RareganError(
            f"task {task!r} does not fit class folders; use multiclass/binary/ordinal"
        )
    if task == "binary" and len(label_names) != 2:
        raise RareganError(f"task binary needs 2 class folders, {root} has {label_names}")

    paths = pd.Series(rows["path"], dtype=str)
    names = paths.str.rsplit("/", n=1).str[-1]
    patients = names.str.extract(regex, expand=False)
    lost = patients.isna().to_numpy()
    if lost.any():
        culprit = paths.iloc[int(np.flatnonzero(lost)[0])]
        raise RareganError(
            f"file {culprit} does not match the patient pattern {pattern!r}; "
            "set patient_pattern to a regex with one group that captures the patient id"
        )
    prefix = [f"{s}/" if s else "" for s in rows["orig_split"]]
    meta = {
        "path": paths,
        "patient": patients,
        "image_id": pd.Series(rows["label"], dtype=str) + "/" + names,
        "orig_split": rows["orig_split"],
    }
    if any(prefix):
        meta["image_id"] = pd.Series(prefix, dtype=str) + meta["image_id"]
    index = {name: i for i, name in enumerate(label_names)}
    codes = np.array([index[c] for c in rows["label"]], dtype=np.int64)
    labels = np.eye(len(label_names), dtype=np.float32)[codes]
    info = {"skipped_files": notes, "patient_pattern": pattern}
    return Records(make_frame(meta, label_names, labels), label_names, task, "folders", root, info)


def _default_task(label_names: list[str]) -> str:
    """ordinal when every class name is an integer, binary for two classes, else multiclass."""
    if all(re.fullmatch(r"\d+", name) for name in label_names):
        return "ordinal"
    return "binary" if len(label_names) == 2 else "multiclass"

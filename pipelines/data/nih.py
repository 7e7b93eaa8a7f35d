"""NIH ChestX-ray14 (Wang et al. 2017): Data_Entry_2017.csv and images/ or images_0NN/images/."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.records import Records, drop_repeated_rows, make_frame, not_text_error
from pipelines.errors import RareganError

CSV_NAME = "Data_Entry_2017.csv"
FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
# The official lists of the patient-wise split, used for orig_split when they sit beside the CSV.
SPLIT_LISTS = {"train_val_list.txt": "train", "test_list.txt": "test"}


def split_header(line: str) -> list[str]:
    """Column names of the official header: `Name[a,b]` is two columns, `Name[a]` and `Name[b]`."""
    names, field, depth = [], "", 0
    for char in line.rstrip("\r\n"):
        if char == "," and depth == 0:
            names.append(field.strip())
            field = ""
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        field += char
    names.append(field.strip())
    out = []
    for name in names:
        if name.endswith("]") and "[" in name:
            base, inner = name[:-1].split("[", 1)
            out += [f"{base}[{part.strip()}]" for part in inner.split(",")]
        else:
            out.append(name)
    return out


def read_entries(csv: Path) -> pd.DataFrame:
    """Read Data_Entry_2017.csv with its bracketed header expanded (trailing commas tolerated)."""
    try:
        return _read_entries(csv)
    except UnicodeDecodeError:
        raise not_text_error(csv, f"give the NIH {CSV_NAME} as UTF-8 text") from None
    except pd.errors.ParserError as err:
        raise RareganError(f"{csv} is not a well-formed CSV: {str(err).strip()}") from None


def _read_entries(csv: Path) -> pd.DataFrame:
    """read_entries without turning decoding and parsing failures into user errors."""
    with open(csv, encoding="utf-8-sig") as handle:
        first = handle.readline()
    if not first.strip():
        raise RareganError(f"{csv} is empty; it needs the official header and one row per image")
    names = split_header(first)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise RareganError(f"{csv} lacks column {missing[0]!r}; an NIH entry CSV needs {REQUIRED}")
    frame = pd.read_csv(
        csv,
        header=None,
        skiprows=1,
        names=names,
        index_col=False,
        dtype={"Image Index": str, "Finding Labels": str, "Patient ID": str},
        keep_default_na=False,
        encoding="utf-8-sig",
    )
    if frame.empty:
        raise RareganError(f"{csv} has a header but no rows")
    return frame


def find_images(root: Path) -> tuple[dict[str, str], list[Path]]:
    """File name → absolute path for images in root/images and root/images_NNN/images."""
    folders = [root / "images"]
    folders += sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    found: dict[str, str] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as entries:
                for entry in entries:
                    found.setdefault(entry.name, entry.path)
    return found, folders


def load(path: str | Path) -> Records:
    """Index an NIH ChestX-ray14 root (or its Data_Entry_2017.csv): 14 findings, multilabel."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RareganError(f"NIH path {path} does not exist; give the folder holding {CSV_NAME}")
    csv = path if path.is_file() else path / CSV_NAME
    if not csv.is_file():
        raise RareganError(f"{CSV_NAME} not found in {path}; give the NIH ChestX-ray14 root")
    root = csv.parent
    frame = read_entries(csv)
    frame["Image Index"] = frame["Image Index"].str.strip()
    frame, n_repeated = drop_repeated_rows(frame, "Image Index", [csv])

    findings = frame["Finding Labels"].str.strip().str.replace(r"\s*\|\s*", "|", regex=True)
    dummies = findings.str.get_dummies(sep="|")
    unknown = [c for c in dummies.columns if c not in FINDINGS and c != NO_FINDING]
    blank = (findings == "").to_numpy()
    if unknown or blank.any():
        if unknown:
            row = int(np.flatnonzero(dummies[unknown[0]].to_numpy())[0])
            what = f"unknown finding {unknown[0]!r}"
        else:
            row = int(np.flatnonzero(blank)[0])
            what = "no finding label (write 'No Finding' for none)"
        raise RareganError(
            f"{csv} line {row + 2} ({frame['Image Index'].iloc[row]}): {what}; "
            f"known findings: {', '.join(FINDINGS)} or {NO_FINDING}"
        )
    labels = dummies.reindex(columns=list(FINDINGS), fill_value=0)

    images, folders = find_images(root)
    names = frame["Image Index"].str.strip()
    found = names.map(images)
    if found.notna().sum() == 0:
        looked = ", ".join(str(f) for f in folders[:3]) + (" …" if len(folders) > 3 else "")
        raise RareganError(
            f"none of the {len(frame)} images listed in {csv} was found (looked in {looked}); "
            "put the PNGs in images/ or the official images_0NN/images/ folders"
        )
    fallback = str(root / "images") + "/" + names
    paths = found.fillna(fallback)

    meta = {
        "path": paths,
        "patient": frame["Patient ID"].str.strip(),
        "view": ["frontal"] * len(frame),
        "image_id": names,
        "orig_split": _official_split(root, names),
    }
    out = make_frame(meta, list(FINDINGS), labels.to_numpy(dtype=np.float32))
    extras = {"projection": "View Position", "age": "Patient Age", "sex": "Patient Gender"}
    for new, old in extras.items():
        if old in frame.columns:
            out[new] = frame[old].to_numpy()
    info = {"csv": str(csv), "missing_images": int(found.isna().sum())}
    if n_repeated:
        info["repeated_rows"] = (
            f"dropped {n_repeated} repeated row(s) of the same image with the same labels"
        )
    return Records(out, list(FINDINGS), "multilabel", "nih", root, info)


def _official_split(root: Path, names: pd.Series) -> pd.Series:
    """ "train"/"test" from the official list files when present, else ""."""
    split = pd.Series([""] * len(names), dtype=str)
    for list_name, tag in SPLIT_LISTS.items():
        listed = root / list_name
        if listed.is_file():
            members = set(listed.read_text().split())
            split[names.isin(members).to_numpy()] = tag
    return split

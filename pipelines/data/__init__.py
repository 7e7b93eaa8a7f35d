"""Data sources → one records table: CheXpert, NIH ChestX-ray14, Kermany and class folders."""

from __future__ import annotations

import inspect
from pathlib import Path

from pipelines.data import chexpert, folders, kermany, nih
from pipelines.data.labelmap import map_labels, parse_label_map
from pipelines.data.records import META_COLUMNS, Records, make_frame
from pipelines.errors import RareganError

FORMATS = ("chexpert", "nih", "kermany", "folders")
LOADERS = {
    "chexpert": chexpert.load,
    "nih": nih.load,
    "kermany": kermany.load,
    "folders": folders.load,
}
LAYOUTS = (
    "chexpert (a folder with train.csv/valid.csv, or holding CheXpert-v1.0-small/), "
    "nih (a folder with Data_Entry_2017.csv), "
    "kermany (chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/), "
    "folders ([{train,val,test}/]<class>/<images>)"
)

__all__ = [
    "FORMATS",
    "META_COLUMNS",
    "Records",
    "detect_format",
    "load_records",
    "make_frame",
    "map_labels",
    "parse_label_map",
]


def detect_format(path: str | Path) -> str:
    """The source format of a data path, judged from its files and folders."""
    path = Path(path).expanduser()
    if not path.exists():
        raise RareganError(f"data path {path} does not exist; give a data set folder or CSV")
    if path.is_file():
        return _csv_format(path)
    if chexpert.find_csvs(path):
        return "chexpert"
    if (path / nih.CSV_NAME).is_file():
        return "nih"
    if kermany.find_root(path) is not None:
        return "kermany"
    if folders.looks_like_folders(path):
        return "folders"
    raise RareganError(f"cannot tell the data format of {path}; layouts understood: {LAYOUTS}")


def load_records(path: str | Path, format: str | None = None, **options) -> Records:
    """Load any supported source as Records; `format` is detected when not given."""
    fmt = format or detect_format(path)
    if fmt not in LOADERS:
        raise RareganError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    loader = LOADERS[fmt]
    allowed = [p for p in inspect.signature(loader).parameters if p != "path"]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise RareganError(
            f"option {unknown[0]!r} does not apply to {fmt} data; "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return loader(path, **options)


def _csv_format(path: Path) -> str:
    """chexpert or nih for a CSV path, from its name or header."""
    if path.name == nih.CSV_NAME:
        return "nih"
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
        if "Image Index" in header and "Finding Labels" in header:
            return "nih"
        if path.name in chexpert.CSV_SPLITS or ("Path" in header and "Frontal/Lateral" in header):
            return "chexpert"
    raise RareganError(f"cannot tell the data format of file {path}; layouts understood: {LAYOUTS}")

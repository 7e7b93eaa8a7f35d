"""CheXpert (Irvin et al. 2019): train.csv / valid.csv with 1 / 0 / -1 / blank per observation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.records import Records, drop_repeated_rows, make_frame, not_text_error
from pipelines.errors import RareganError

CSV_SPLITS = {"train.csv": "train", "valid.csv": "val", "test.csv": "test"}
ROOT_NAMES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
# Columns before the observations; every other column is an observation, kept in the CSV's order.
META = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
# The 14 observations CheXpert labels (Irvin et al. 2019, Table 1): the label columns this reader
# trains on. Any other column (a site's ICU flag, a study id) is ignored, and named in one line.
OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
REQUIRED = ("Path", "Frontal/Lateral")
POLICIES = {"u_ones": 1.0, "u_zeros": 0.0, "u_ignore": np.nan}
UNCERTAIN = "uncertain_labels"  # per row: the labels the report marked uncertain (-1), '|'-joined
VALUES = (1.0, 0.0, -1.0)
TEXT_HINT = "give the CheXpert CSV as UTF-8 text (train.csv / valid.csv as downloaded)"


def find_csvs(path: Path) -> list[Path]:
    """The CheXpert CSVs at `path`: the file itself, or train/valid(/test).csv in it or its root."""
    if path.is_file():
        return [path]
    for root in (path, *(path / name for name in ROOT_NAMES)):
        csvs = [root / name for name in CSV_SPLITS if (root / name).is_file()]
        if csvs:
            return csvs
    return []


def load(path: str | Path, uncertainty: str = "u_ones", frontal_only: bool = True) -> Records:
    """Index a CheXpert root (or one of its CSVs); -1 follows `uncertainty`, blanks become 0."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RareganError(
            f"CheXpert path {path} does not exist; give the folder holding train.csv"
        )
    if uncertainty not in POLICIES:
        raise RareganError(
            f"unknown uncertainty policy {uncertainty!r}; use one of {', '.join(POLICIES)}"
        )
    csvs = find_csvs(path)
    if not csvs:
        raise RareganError(f"no train.csv or valid.csv found in {path}; give the CheXpert root")
    root = csvs[0].parent
    parts, label_names, ignored = [], None, []
    for csv in csvs:
        frame, names = _read_csv(csv)
        ignored += [c for c in frame.attrs["ignored_columns"] if c not in ignored]
        if label_names is None:
            label_names = names
        elif set(names) != set(label_names):
            odd = sorted(set(names) ^ set(label_names))
            raise RareganError(
                f"{csv} has observation columns {odd} that {csvs[0].name} does not share "
                "(or lacks some it has); give CSVs with the same observations"
            )
        frame["orig_split"] = CSV_SPLITS.get(csv.name, "")
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame, n_repeated = drop_repeated_rows(frame, "Path", csvs)
    n_all = len(frame)
    if frontal_only:
        frame = frame.loc[frame["view"].to_numpy() == "frontal"].reset_index(drop=True)

    labels = frame[label_names].to_numpy(dtype=np.float32)
    n_uncertain = int((labels == -1.0).sum())
    uncertain = labels == -1.0  # kept by name: val/test rows score them as unknown, not by policy
    labels[np.isnan(labels)] = 0.0  # blank: not mentioned in the report → negative
    labels[labels == -1.0] = POLICIES[uncertainty]

    prefix = str(root) + "/"
    rel = frame["Path"].str.replace(r"^[^/]*CheXpert[^/]*/", "", regex=True)
    meta = {
        "path": prefix + rel,
        "patient": frame["patient"],
        "view": frame["view"],
        "image_id": frame["Path"],
        "orig_split": frame["orig_split"],
    }
    out = make_frame(meta, label_names, labels)
    names = np.asarray(label_names, dtype=object)
    out[UNCERTAIN] = ["|".join(names[row]) for row in uncertain]
    extras = {"sex": "Sex", "age": "Age", "projection": "AP/PA"}
    for new, old in extras.items():
        if old in frame.columns:
            column = frame[old]
            out[new] = (
                pd.to_numeric(column, errors="coerce") if new == "age" else column
            ).to_numpy()
    info = {
        "csvs": [str(c) for c in csvs],
        "uncertainty": uncertainty,
        "uncertain_values": n_uncertain,
        "lateral_dropped": n_all - len(frame) if frontal_only else 0,
    }
    if n_repeated:
        info["repeated_rows"] = (
            f"dropped {n_repeated} repeated row(s) of the same image with the same labels"
        )
    if ignored:
        info["ignored_columns"] = (
            f"ignored column(s) {', '.join(ignored)} of {', '.join(c.name for c in csvs)}: not CheXpert "
            "observations (the labels are CheXpert's 14 observation columns)"
        )
    return Records(out, list(label_names), "multilabel", "chexpert", root, info)


def _read_csv(csv: Path) -> tuple[pd.DataFrame, list[str]]:
    """Read one CheXpert CSV: meta columns as text, observations as float; check every value."""
    try:
        header = pd.read_csv(csv, nrows=0).columns.tolist()
    except pd.errors.EmptyDataError:
        raise RareganError(f"{csv} is empty; it needs a header and one row per image") from None
    except UnicodeDecodeError:
        raise not_text_error(csv, TEXT_HINT) from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise RareganError(f"{csv} lacks column {missing[0]!r}; a CheXpert CSV needs {REQUIRED}")
    names = [c for c in header if c in OBSERVATIONS]
    ignored = [c for c in header if c not in META and c not in OBSERVATIONS]
    if not names:
        raise RareganError(
            f"{csv} has no CheXpert observation columns (such as {OBSERVATIONS[5]!r}); "
            f"its other columns: {', '.join(ignored) or 'none'}"
        )
    dtypes = {c: str for c in header if c in META} | dict.fromkeys(names, np.float32)
    read = {"dtype": dtypes, "keep_default_na": False, "na_values": {c: [""] for c in names}}
    read["usecols"] = [c for c in header if c in META or c in OBSERVATIONS]
    try:
        frame = pd.read_csv(csv, **read)
    except pd.errors.ParserError as err:
        raise RareganError(f"{csv} is not a well-formed CSV: {err}") from None
    except UnicodeDecodeError:
        raise not_text_error(csv, TEXT_HINT) from None
    except ValueError:
        _raise_bad_text(csv, names)
        raise
    if frame.empty:
        raise RareganError(f"{csv} has a header but no rows")
    values = frame[names].to_numpy()
    bad = ~(np.isnan(values) | np.isin(values, VALUES))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise RareganError(
            f"{csv} line {row + 2}, column {names[col]!r}: unknown label value {float(values[row, col])!r}; "
            "use 1.0, 0.0, -1.0 or blank"
        )
    view = frame["Frontal/Lateral"].str.lower()
    odd = ~view.isin(("frontal", "lateral")).to_numpy()
    if odd.any():
        row = int(np.flatnonzero(odd)[0])
        raise RareganError(
            f"{csv} line {row + 2}, column 'Frontal/Lateral': unknown value "
            f"{frame['Frontal/Lateral'].iloc[row]!r}; use Frontal or Lateral"
        )
    frame["view"] = view
    frame["patient"] = frame["Path"].str.extract(r"(?:^|/)(patient\d+)/", expand=False)
    lost = frame["patient"].isna().to_numpy()
    if lost.any():
        row = int(np.flatnonzero(lost)[0])
        raise RareganError(
            f"{csv} line {row + 2}: Path {frame['Path'].iloc[row]!r} has no patientNNNNN folder; "
            "CheXpert paths look like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
        )
    frame.attrs["ignored_columns"] = ignored
    return frame, names


def _raise_bad_text(csv: Path, names: list[str]) -> None:
    """Find the first observation cell that is not a label value (slow path, only after a failure)."""
    text = pd.read_csv(csv, dtype=str, keep_default_na=False, usecols=names)
    for name in names:
        number = pd.to_numeric(text[name].where(text[name] != "", "0"), errors="coerce")
        odd = np.flatnonzero(~number.isin(VALUES).to_numpy())
        if len(odd):
            row = int(odd[0])
            raise RareganError(
                f"{csv} line {row + 2}, column {name!r}: unknown label value "
                f"{text[name].iloc[row]!r}; use 1.0, 0.0, -1.0 or blank"
            )
    raise RareganError(f"{csv}: an observation column holds a value that is not a number")

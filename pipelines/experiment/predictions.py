"""A sweep's cells table and the predictions of its finished cells, read and checked.

`check_cells` validates the cells table (its columns, arms and statuses, no cell listed twice) and
counts a `done` cell whose record file or finished run is gone as failed; `load_predictions` reads
one cell's predictions (ids unique, labels 1/0/NaN, scores finite); `collect` aligns every
finished cell's scores on the test images all cells share, for the statistics (`stats.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.classifier.arms import ARMS
from pipelines.errors import RareganError
from pipelines.runs import is_done

CELL_COLUMNS = ("class", "fraction", "arm", "seed", "status", "run", "error", "predictions")
STATUSES = ("done", "failed", "pending")
KEY = ["class", "fraction", "arm", "seed"]


def label_names(frame: pd.DataFrame) -> list[str]:
    """Labels L of a predictions frame: those with both an `L` and a `score:L` column."""
    return [c for c in frame.columns if not c.startswith("score:") and f"score:{c}" in frame]


def predictions_file(source: Path | str) -> Path:
    """A cell's predictions: `source` itself when it names a CSV file (a cell record's
    `.csv.gz`), else the `predictions.csv` of the run folder `source`."""
    source = Path(source)
    return source if source.name.endswith((".csv", ".csv.gz")) else source / "predictions.csv"


def load_predictions(source: Path | str) -> pd.DataFrame:
    """A finished cell's predictions (`predictions_file`), checked: ids unique, labels 1/0/NaN,
    scores finite."""
    path = predictions_file(source)
    if not path.is_file():
        raise RareganError(f"{path}: predictions file missing; re-run that cell or mark it failed")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "patient": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RareganError(f"{path}: not a readable CSV ({err}); re-run that cell") from None
    labels = label_names(frame)
    missing = [c for c in ("image_id", "patient") if c not in frame]
    if missing or not labels:
        what = f"columns {missing}" if missing else "any pair of columns `L` and `score:L`"
        raise RareganError(f"{path}: lacks {what}; re-run that cell with the current raregan")
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.argmax(dup.to_numpy())) + 2
        raise RareganError(f"{path} row {row}: image_id {frame['image_id'][dup].iloc[0]!r} repeats")
    scores = [f"score:{n}" for n in labels]
    num = frame[labels + scores].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = (num.isna() & frame[num.columns].notna()) | ~np.isfinite(num.fillna(0))
    bad[labels] |= num[labels].notna() & ~num[labels].isin([0, 1])
    bad[scores] |= num[scores].isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise RareganError(
            f"{path} row {row + 2}: column {num.columns[col]!r} has "
            f"{frame[num.columns[col]].iloc[row]}; labels must be 1, 0 or empty and scores "
            "finite numbers; re-run that cell"
        )
    frame[num.columns] = num
    return frame


def _source(cell: Mapping) -> str | None:
    """Where a done cell's predictions are: its record's file, else its run folder."""
    for key in ("predictions", "run"):
        if isinstance(cell.get(key), str | Path) and str(cell[key]):
            return str(cell[key])
    return None


def check_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """A validated copy; a `done` cell whose record file is gone, or (without a record) whose run
    folder lacks DONE, counts as failed, with that error."""
    missing = [c for c in CELL_COLUMNS[:5] if c not in cells]
    if missing:
        raise RareganError(f"cells table lacks columns {missing}; it needs {list(CELL_COLUMNS)}")
    cells = cells.reset_index(drop=True).copy()
    cells = cells.reindex(columns=[*cells, *[c for c in CELL_COLUMNS[5:] if c not in cells]])
    cells["error"] = cells["error"].astype(object).fillna("").astype(str)
    checks = (
        (~cells["arm"].isin(ARMS), lambda r: f"arm {r['arm']!r} is not one of {', '.join(ARMS)}"),
        (
            ~cells["status"].isin(STATUSES),
            lambda r: f"status {r['status']!r} is not one of " + ", ".join(STATUSES),
        ),
        (cells.duplicated(KEY), lambda r: f"cell {tuple(r[KEY])} is listed twice"),
    )
    for bad, why in checks:
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise RareganError(f"cells table row {i}: {why(cells.loc[i])}")
    for i in cells.index[cells["status"] == "done"]:
        source = _source(cells.loc[i])
        record = source is not None and predictions_file(source) == Path(source)
        if record and not Path(source).is_file():
            cells.loc[i, ["status", "error"]] = ["failed", f"cell record file {source} is missing"]
        elif not record and (source is None or not is_done(Path(source))):
            why = f"run folder {source} has no DONE marker (the run did not finish)"
            cells.loc[i, ["status", "error"]] = ["failed", why]
    return cells


def collect(cells: pd.DataFrame) -> dict:
    """Finished cells' predictions aligned on image_id (sorted).

    Returns dict(image_id, patient: arrays (N,); labels: {label: y (N,) with NaN}; scores:
    {(class, fraction, arm, seed): score of that cell's class (N,)}; predicted: {same key: index
    of the highest-scoring label (N,), the predicted class of a single-label task}; cells: the
    checked table).
    """
    cells = check_cells(cells)
    out = {"image_id": np.empty(0, str), "patient": np.empty(0, str), "labels": {}, "scores": {}}
    out["predicted"] = {}
    ref, ref_path = None, None
    for row in cells[cells["status"] == "done"].to_dict("records"):
        path, cls = predictions_file(_source(row)), row["class"]
        frame = load_predictions(path)
        if f"score:{cls}" not in frame or cls not in frame:
            raise RareganError(
                f"{path}: no columns {cls!r} and 'score:{cls}' for the cell's class; it has "
                f"{label_names(frame)}; check the class names of the sweep"
            )
        frame = frame.set_index("image_id")
        if ref is None:
            frame = ref = frame.sort_index()
            ref_path = path
            out["image_id"] = ref.index.to_numpy(str)
            out["patient"] = ref["patient"].to_numpy(str)
            out["labels"] = {n: ref[n].to_numpy(np.float64) for n in label_names(ref.reset_index())}
        else:
            odd = frame.index.symmetric_difference(ref.index)
            frame = frame.reindex(ref.index)
            cols = ["patient", *[n for n in out["labels"] if n in frame]]
            differ = ~((ref[cols] == frame[cols]) | (ref[cols].isna() & frame[cols].isna()))
            if len(odd) or differ.to_numpy().any():
                what = (
                    f"image_id {odd[0]!r} is in only one of them"
                    if len(odd)
                    else (
                        f"column {differ.any().idxmax()!r} of image_id "
                        f"{differ.any(axis=1).idxmax()!r} differs"
                    )
                )
                raise RareganError(
                    f"{path} vs {ref_path}: {what}; all cells of a sweep must share one test split"
                )
        key = tuple(row[k] for k in KEY)
        out["scores"][key] = frame[f"score:{cls}"].to_numpy(np.float64)
        every = [f"score:{n}" for n in out["labels"]]
        if all(c in frame for c in every):  # single-label tasks: the predicted class
            out["predicted"][key] = frame[every].to_numpy(np.float64).argmax(axis=1)
    out["cells"] = cells
    return out

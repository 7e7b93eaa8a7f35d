"""Cell records: side files before the JSON, hashes checked, removal, reproducible predictions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.errors import RareganError
from pipelines.experiment.records import (
    PREDICTIONS,
    predictions_bytes,
    read_record,
    record_path,
    remove_record,
    side_file,
    write_record,
)

RECORD = {"id": "classify-none-f50-s0", "kind": "classify", "fingerprint": {"id": "x"}}


def run_with_predictions(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    frame = pd.DataFrame(
        {
            "image_id": ["007", "010"],
            "patient": ["0001", "0002"],
            "path": ["/here/a.png", "/here/b.png"],
            "Fracture": [1.0, None],
            "score:Fracture": [0.1234567, 0.9],
        }
    )
    frame.to_csv(run / "predictions.csv", index=False)
    return run, frame


def test_round_trip_and_reproducible_predictions(tmp_path):
    run, frame = run_with_predictions(tmp_path)
    data = predictions_bytes(run)
    assert data == predictions_bytes(run), "same predictions, same bytes (no time in the gzip)"
    folder = tmp_path / "cells"
    path = write_record(folder, RECORD | {"metrics": {"auc": 0.5}}, {PREDICTIONS: data})
    assert path == record_path(folder, RECORD["id"])
    back = read_record(folder, RECORD["id"])
    assert back["metrics"] == {"auc": 0.5} and back["version"] == 1
    pred = pd.read_csv(
        side_file(folder, back, PREDICTIONS), dtype={"image_id": str, "patient": str}
    )
    expected = frame.drop(columns=["path"])
    pd.testing.assert_frame_equal(pred, expected)  # ids keep their zeros, machine paths dropped
    assert read_record(folder, "classify-gan-f50-s0") is None


def test_tampered_missing_or_foreign_records_are_refused(tmp_path):
    run, _ = run_with_predictions(tmp_path)
    folder = tmp_path / "cells"
    write_record(folder, RECORD, {PREDICTIONS: predictions_bytes(run)})
    side = folder / f"{RECORD['id']}{PREDICTIONS}"
    side.write_bytes(side.read_bytes() + b"\0")
    with pytest.raises(RareganError, match=r"\.csv\.gz: missing or not the file its record"):
        read_record(folder, RECORD["id"])
    side.unlink()
    with pytest.raises(RareganError, match="missing or not the file"):
        read_record(folder, RECORD["id"])
    record_path(folder, "other").write_text(json.dumps(RECORD))
    with pytest.raises(RareganError, match="not the record of cell other"):
        read_record(folder, "other")
    record_path(folder, "broken").write_text("{")
    with pytest.raises(RareganError, match="not a readable cell record"):
        read_record(folder, "broken")


def test_remove_record_takes_its_side_files(tmp_path):
    folder = tmp_path / "cells"
    write_record(folder, RECORD, {"-grid.png": b"png", PREDICTIONS: b"csv"})
    write_record(folder, RECORD | {"id": "keep"}, {"-grid.png": b"png"})
    remove_record(folder, RECORD["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["keep-grid.png", "keep.json"]
    remove_record(folder, RECORD["id"])  # nothing left to remove: no error

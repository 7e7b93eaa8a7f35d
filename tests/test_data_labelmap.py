"""Label maps: merging source labels by name, with NaN kept as unknown."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.data import load_records, make_frame, map_labels, parse_label_map
from pipelines.data.records import Records
from pipelines.errors import RareganError


def test_parse_label_map() -> None:
    text = "Lung Lesion=Nodule|Mass; Pleural Other = Pleural_Thickening ;"
    assert parse_label_map(text) == {
        "Lung Lesion": ["Nodule", "Mass"],
        "Pleural Other": ["Pleural_Thickening"],
    }
    for bad in ["Lung Lesion", "=Mass", "Lesion=", "A=B;A=C", " ; "]:
        with pytest.raises(RareganError, match="label map"):
            parse_label_map(bad)


def test_nih_nodule_mass_to_lung_lesion(shared_data: Path) -> None:
    rec = load_records(shared_data / "nih_chestxray14_1000")
    out = map_labels(rec, parse_label_map("Lung Lesion=Nodule|Mass"))
    expected = np.maximum(rec.frame["Nodule"], rec.frame["Mass"]).to_numpy()
    np.testing.assert_array_equal(out.frame["Lung Lesion"].to_numpy(), expected)
    assert int(out.frame["Lung Lesion"].sum()) == 70  # 39 Nodule + 35 Mass − 4 with both
    assert "Nodule" not in out.frame.columns and "Mass" not in out.label_names
    assert out.label_names[4] == "Lung Lesion" and len(out.label_names) == 13
    for name in out.label_names:
        if name != "Lung Lesion":
            np.testing.assert_array_equal(out.frame[name], rec.frame[name])
    assert list(out.frame.columns[-3:]) == ["projection", "age", "sex"]
    only = map_labels(rec, {"Lung Lesion": ["Nodule", "Mass"]}, keep_unmapped=False)
    assert only.label_names == ["Lung Lesion"] and only.task == "multilabel"


def test_nan_rules() -> None:
    labels = np.array([[1, np.nan], [0, np.nan], [0, 0], [np.nan, np.nan], [0, 1]], np.float32)
    rec = Records(make_frame({}, ["a", "b"], labels), ["a", "b"], "multilabel", "t", Path("."))
    got = map_labels(rec, {"ab": ["a", "b"]}).frame["ab"].tolist()
    assert got[0] == 1 and math.isnan(got[1]) and got[2] == 0 and math.isnan(got[3]) and got[4] == 1


def test_unknown_source_lists_known(shared_data: Path) -> None:
    rec = load_records(shared_data / "nih_chestxray14_1000")
    with pytest.raises(
        RareganError, match=r"unknown source label 'Lesion'.*known labels: Atelectasis"
    ):
        map_labels(rec, {"Lung Lesion": ["Lesion"]})
    with pytest.raises(RareganError, match=r"'Edema', which is also an unmapped label"):
        map_labels(rec, {"Edema": ["Mass"]})


def test_single_label_merge_stays_one_hot(shared_data: Path) -> None:
    rec = load_records(shared_data / "chest_xray")
    merged = map_labels(rec, {"pneumonia": ["bacterial", "viral"]})
    binary = load_records(shared_data / "chest_xray", task="binary")
    assert merged.task == "binary" and merged.label_names == ["normal", "pneumonia"]
    np.testing.assert_array_equal(merged.labels, binary.labels)
    with pytest.raises(RareganError, match="no class"):
        map_labels(rec, {"pneumonia": ["bacterial", "viral"]}, keep_unmapped=False)

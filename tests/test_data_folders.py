"""Class-folder loader: the real knee KL grades and small trees under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import touch_tree

from pipelines.data import detect_format, load_records
from pipelines.data.folders import DEFAULT_PATIENT_PATTERN, natural_key
from pipelines.errors import RareganError


def test_real_knee_kl(shared_data: Path) -> None:
    root = shared_data / "knee_kl"
    assert detect_format(root) == "folders"
    rec = load_records(root)
    assert rec.source == "folders" and rec.task == "ordinal"
    assert rec.label_names == ["0", "1", "2", "3", "4"]
    assert len(rec) == 8260 and rec.info["skipped_files"] == []
    splits = rec.frame["orig_split"].value_counts().to_dict()
    assert splits == {"train": 5778, "val": 826, "test": 1656}
    assert int(rec.frame["4"].sum()) == 251
    np.testing.assert_array_equal(rec.labels.sum(axis=1), 1)
    row = rec.frame.loc[rec.frame["image_id"] == "train/0/9001695L.png"].iloc[0]
    assert row["patient"] == "9001695"
    # the loader resolves the root (../shared may be a symlink)
    assert Path(row["path"]) == (root / "train/0/9001695L.png").resolve()
    # Both knees of a patient share the id; no patient crosses the original splits.
    assert rec.frame.groupby("patient")["orig_split"].nunique().max() == 1


def test_default_pattern_strips_side_marker() -> None:
    import re

    pattern = re.compile(DEFAULT_PATIENT_PATTERN)
    got = {n: pattern.match(n).group(1) for n in ["9025994L.png", "9025994R.png", "p12_R.jpg"]}
    assert got == {"9025994L.png": "9025994", "9025994R.png": "9025994", "p12_R.jpg": "p12"}
    assert pattern.match("scan_007.png").group(1) == "scan_007"


def make_classes(root: Path, classes: dict[str, list[str]]) -> Path:
    """root/<class>/<file> with empty files."""
    return touch_tree(root, classes)


def test_natural_order_and_default_tasks(tmp_path: Path) -> None:
    assert sorted(["10", "2", "1"], key=natural_key) == ["1", "2", "10"]
    rec = load_records(make_classes(tmp_path / "a", {c: ["1.png"] for c in ["10", "2", "1"]}))
    assert rec.label_names == ["1", "2", "10"] and rec.task == "ordinal"
    assert detect_format(tmp_path / "a") == "folders"
    two = load_records(make_classes(tmp_path / "b", {"dog": ["x.png"], "cat": ["y.jpg"]}))
    assert two.label_names == ["cat", "dog"] and two.task == "binary"
    assert two.targets().tolist() == [0, 1] and list(two.frame["orig_split"]) == ["", ""]
    three = make_classes(tmp_path / "c", {"a": ["1.png"], "b": ["2.png"], "c10": ["3.png"]})
    assert load_records(three).task == "multiclass"
    assert load_records(three, task="ordinal").task == "ordinal"


def test_skipped_files_counted(tmp_path: Path) -> None:
    root = make_classes(tmp_path, {"0": ["1L.png", ".hidden.png", "notes.txt"], "1": ["2R.PNG"]})
    rec = load_records(root)
    assert len(rec) == 2 and rec.info["skipped_files"] == [
        f"skipped 1 text files in {root / '0'} (convert or remove them to use them)"
    ]
    assert list(rec.frame["patient"]) == ["1", "2"]


def test_patient_pattern(tmp_path: Path) -> None:
    root = make_classes(tmp_path, {"a": ["pt01_scan2.png"], "b": ["pt02_scan1.png", "x.png"]})
    with pytest.raises(RareganError, match=r"x\.png does not match the patient pattern '\^pt"):
        load_records(root, patient_pattern=r"^pt(\d+)_")
    (root / "b" / "x.png").unlink()
    rec = load_records(root, patient_pattern=r"^pt(\d+)_")
    assert list(rec.frame["patient"]) == ["01", "02"]
    with pytest.raises(RareganError, match="exactly one"):
        load_records(root, patient_pattern=r"^pt\d+")


def test_empty_class_and_bad_layouts(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "r", {"a": ["1.png"], "b": ["readme.md"]})
    with pytest.raises(RareganError, match=r"class folder .*r/b holds no images"):
        load_records(root, format="folders")
    one = make_classes(tmp_path / "one", {"a": ["1.png"]})
    with pytest.raises(RareganError, match="one class folder"):
        load_records(one)
    with pytest.raises(RareganError, match="task 'multilabel'"):
        load_records(
            make_classes(tmp_path / "m", {"a": ["1.png"], "b": ["2.png"]}), task="multilabel"
        )


def test_a_folder_named_normal_is_a_class_not_kermany(tmp_path: Path) -> None:
    """normal/ + fracture/ are two classes: Kermany is told by its file names, not a folder name."""
    root = make_classes(tmp_path, {"normal": ["a1.png", "a2.png"], "fracture": ["b1.png"]})
    assert detect_format(root) == "folders"
    rec = load_records(root)
    assert rec.label_names == ["fracture", "normal"] and len(rec) == 3


def test_class_names_differing_only_in_case_are_one_class(tmp_path: Path) -> None:
    files = {
        "train/Fracture": ["a1.png", "a2.png"], "train/Normal": ["b1.png", "b2.png"],
        "val/fracture": ["a3.png"], "val/normal ": ["b3.png"],
        "test/FRACTURE": ["a4.png"], "test/NORMAL": ["b4.png"],
    }  # fmt: skip
    rec = load_records(touch_tree(tmp_path / "d", files))
    assert rec.label_names == ["Fracture", "Normal"]  # the train split's spelling
    per_split = rec.frame.groupby("orig_split")["Fracture"].sum().to_dict()
    assert per_split == {"train": 2, "val": 1, "test": 1}


def test_two_folders_of_one_split_differing_in_case_are_refused(tmp_path: Path) -> None:
    root = touch_tree(tmp_path, {"a": ["1.png"], "A": ["2.png"], "b": ["3.png"]})
    with pytest.raises(RareganError, match="differ only in case"):
        load_records(root)


def test_dicom_files_are_named_by_kind_and_a_class_losing_most_is_refused(tmp_path: Path) -> None:
    dicoms = [f"s{i}.dcm" for i in range(10)]
    root = make_classes(tmp_path / "most", {"fracture": ["1.png", "2.png", "3.png", *dicoms], "normal": ["4.png"]})  # fmt: skip
    with pytest.raises(RareganError, match=r"fracture: 10 of its 13 files .*10 DICOM.*PNG or JPEG"):
        load_records(root)
    root = make_classes(tmp_path / "few", {"fracture": ["1.png", "2.png", "3.png", "x.dcm"], "normal": ["4.png"]})  # fmt: skip
    rec = load_records(root)
    assert len(rec) == 4
    assert rec.info["skipped_files"] == [
        f"skipped 1 DICOM files in {root / 'fracture'} (convert them to PNG or JPEG to use them)"
    ]


def test_grade_folders_renamed_by_the_label_map_stay_ordinal_in_order(tmp_path: Path) -> None:
    """--label-map "KL0=0;KL1=1;KL2=2" names knee grades as readers know them: same task, order and
    targets (the docs' recipe for reports that say KL4, not 4)."""
    from pipelines.data.labelmap import map_labels, parse_label_map

    rec = load_records(make_classes(tmp_path / "g", {c: [f"{c}.png"] for c in ["2", "0", "1"]}))
    renamed = map_labels(rec, parse_label_map("KL0=0;KL1=1;KL2=2"))
    assert renamed.label_names == ["KL0", "KL1", "KL2"] and renamed.task == "ordinal"
    np.testing.assert_array_equal(renamed.targets(), rec.targets())

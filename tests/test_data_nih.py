"""NIH ChestX-ray14 loader: the real 1,000-image subset and small CSVs with the official quirks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.data import detect_format, load_records
from pipelines.data.nih import FINDINGS, split_header
from pipelines.errors import RareganError

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# Label counts of the subset, from the data README.
COUNTS = {
    "Effusion": 170,
    "Infiltration": 162,
    "Atelectasis": 95,
    "Cardiomegaly": 83,
    "Consolidation": 42,
    "Pneumothorax": 40,
    "Nodule": 39,
    "Emphysema": 37,
    "Mass": 35,
    "Fibrosis": 32,
    "Edema": 31,
    "Pleural_Thickening": 29,
    "Pneumonia": 11,
    "Hernia": 9,
}


def test_real_subset_counts(shared_data: Path) -> None:
    root = shared_data / "nih_chestxray14_1000"
    assert detect_format(root) == "nih"
    rec = load_records(root)
    assert rec.source == "nih" and rec.task == "multilabel"
    assert rec.label_names == list(FINDINGS)
    assert len(rec) == 1000 and rec.frame["patient"].nunique() == 264
    sums = rec.frame[rec.label_names].sum()
    assert {k: int(v) for k, v in sums.items()} == COUNTS
    assert int((rec.labels.sum(axis=1) == 0).sum()) == 499  # No Finding
    assert rec.info["missing_images"] == 0
    assert all(Path(p).is_file() for p in rec.frame["path"])
    assert set(rec.frame["view"]) == {"frontal"} and set(rec.frame["projection"]) <= {"PA", "AP"}
    first = rec.frame.iloc[1]
    assert first["image_id"] == "00000001_001.png" and first["patient"] == "1"
    assert first["Cardiomegaly"] == 1.0 and first["Emphysema"] == 1.0 and first["Edema"] == 0.0


def test_header_with_commas_in_brackets() -> None:
    names = split_header(HEADER + "\r\n")
    assert len(names) == 11
    assert names[7:] == [
        "OriginalImage[Width]",
        "OriginalImage[Height]",
        "OriginalImagePixelSpacing[x]",
        "OriginalImagePixelSpacing[y]",
    ]


def write_nih(root: Path, rows: list[str], images: list[str], folder: str = "images") -> Path:
    """A Data_Entry_2017.csv with the official header and empty image files in `folder`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text("\r\n".join([HEADER, *rows]) + "\r\n")
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in images:
        (root / folder / name).write_bytes(b"")
    return root


def test_trailing_comma_release_and_official_folders(tmp_path: Path) -> None:
    rows = [
        "00000005_000.png,Mass|Nodule,0,5,60,F,PA,2992,2991,0.143,0.143,",
        "00000006_000.png,No Finding,0,6,61,M,AP,2048,2500,0.168,0.168,",
    ]
    root = write_nih(tmp_path / "nih", rows, ["00000005_000.png"], "images_001/images")
    rec = load_records(root / "Data_Entry_2017.csv")
    assert list(rec.frame["patient"]) == ["5", "6"]
    assert list(rec.frame["projection"]) == ["PA", "AP"]
    assert rec.frame["path"].iloc[0] == str(root / "images_001" / "images" / "00000005_000.png")
    assert rec.frame["path"].iloc[1] == str(root / "images" / "00000006_000.png")  # missing: kept
    assert rec.info["missing_images"] == 1
    np.testing.assert_array_equal(rec.labels.sum(axis=1), [2, 0])
    assert rec.frame["Mass"].iloc[0] == 1.0 and rec.frame["Nodule"].iloc[0] == 1.0


def test_official_split_lists(tmp_path: Path) -> None:
    rows = ["a.png,Hernia,0,1,1,F,PA,1,1,1,1", "b.png,Edema,0,2,1,F,PA,1,1,1,1"]
    root = write_nih(tmp_path, rows, ["a.png", "b.png"])
    (root / "train_val_list.txt").write_text("a.png\n")
    (root / "test_list.txt").write_text("b.png\n")
    assert list(load_records(root).frame["orig_split"]) == ["train", "test"]


def test_unknown_finding_names_line(tmp_path: Path) -> None:
    rows = ["a.png,Hernia,0,1,1,F,PA,1,1,1,1", "b.png,Edema|Lung Lesion,0,2,1,F,PA,1,1,1,1"]
    root = write_nih(tmp_path, rows, ["a.png", "b.png"])
    with pytest.raises(
        RareganError, match=r"Data_Entry_2017\.csv line 3 \(b\.png\).*'Lung Lesion'"
    ):
        load_records(root)


def test_no_image_found_says_where(tmp_path: Path) -> None:
    root = write_nih(tmp_path, ["a.png,Hernia,0,1,1,F,PA,1,1,1,1"], [])
    with pytest.raises(RareganError, match=rf"none of the 1 images .*looked in {tmp_path}/images"):
        load_records(root)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "Data_Entry_2017.csv").write_text("")
    with pytest.raises(RareganError, match=r"Data_Entry_2017\.csv is empty"):
        load_records(tmp_path, format="nih")
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Patient ID\na.png,1\n")
    with pytest.raises(RareganError, match=r"Data_Entry_2017\.csv lacks column 'Finding Labels'"):
        load_records(tmp_path)
    with pytest.raises(RareganError, match=r"nowhere does not exist"):
        load_records(tmp_path / "nowhere", format="nih")


def test_repeated_rows_are_dropped_and_conflicting_ones_refused(tmp_path: Path) -> None:
    same = ["a.png,Hernia,0,1,1,F,PA,1,1,1,1", "b.png,Edema,0,2,1,F,PA,1,1,1,1"]
    root = write_nih(tmp_path / "same", [*same, same[0]], ["a.png", "b.png"])
    rec = load_records(root)
    assert list(rec.frame["image_id"]) == ["a.png", "b.png"]
    assert rec.info["repeated_rows"].startswith("dropped 1 repeated row")
    root = write_nih(
        tmp_path / "odd", [*same, "a.png,No Finding,0,1,1,F,PA,1,1,1,1"], ["a.png", "b.png"]
    )
    with pytest.raises(
        RareganError, match="lists image a.png more than once with different values"
    ):
        load_records(root)

"""CheXpert loader on small CSVs written in the real layout under tmp_path."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.data import detect_format, load_records
from pipelines.errors import RareganError

OBS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
META = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
P = "CheXpert-v1.0-small"
# (path, view, {observation: value}); unlisted observations are blank.
TRAIN = [
    (f"{P}/train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Lung Lesion": "-1.0"}),
    (f"{P}/train/patient00001/study1/view2_lateral.jpg", "Lateral", {"Lung Lesion": "1.0"}),
    (
        f"{P}/train/patient00002/study1/view1_frontal.jpg",
        "Frontal",
        {"Edema": "1.0", "Fracture": "0.0"},
    ),
    (f"{P}/train/patient00003/study2/view1_frontal.jpg", "Frontal", {"No Finding": "1.0"}),
]
VALID = [(f"{P}/valid/patient64541/study1/view1_frontal.jpg", "Frontal", {"Edema": "-1.0"})]


def write_csv(file: Path, rows: list, obs: list[str] = OBS) -> Path:
    """Write a CheXpert CSV with the given observation columns (in that order)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(META + obs)
        for path, view, values in rows:
            ap = "AP" if view == "Frontal" else ""
            out.writerow([path, "Female", "68", view, ap] + [values.get(o, "") for o in obs])
    return file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A CheXpert-v1.0-small folder with train.csv and valid.csv."""
    base = tmp_path / P
    write_csv(base / "train.csv", TRAIN)
    write_csv(base / "valid.csv", VALID)
    return base


def value(records, image_id: str, label: str) -> float:
    """The label value of one image, by name."""
    row = records.frame.index[records.frame["image_id"] == image_id][0]
    return float(records.frame.loc[row, label])


def test_uncertainty_policies_and_blanks(root: Path) -> None:
    frontal = TRAIN[0][0]
    expected = {"u_ones": 1.0, "u_zeros": 0.0, "u_ignore": math.nan}
    for policy, want in expected.items():
        rec = load_records(root, uncertainty=policy)
        got = value(rec, frontal, "Lung Lesion")
        assert got == want or (math.isnan(want) and math.isnan(got)), policy
        assert value(rec, VALID[0][0], "Edema") == want or policy == "u_ignore"
        assert value(rec, TRAIN[2][0], "Edema") == 1.0
        assert value(rec, TRAIN[2][0], "Fracture") == 0.0
        assert value(rec, TRAIN[2][0], "Pneumonia") == 0.0  # blank → 0
    ignore = load_records(root, uncertainty="u_ignore")
    assert int(np.isnan(ignore.labels).sum()) == 2
    assert ignore.info["uncertain_values"] == 2


def test_frontal_only_meta_and_paths(root: Path) -> None:
    rec = load_records(root)
    assert rec.source == "chexpert" and rec.task == "multilabel"
    assert len(rec) == 4 and set(rec.frame["view"]) == {"frontal"}
    assert rec.info["lateral_dropped"] == 1
    f = rec.frame
    assert list(f["patient"]) == ["patient00001", "patient00002", "patient00003", "patient64541"]
    assert list(f["orig_split"]) == ["train", "train", "train", "val"]
    assert list(f["image_id"]) == [r[0] for r in TRAIN if r[1] == "Frontal"] + [VALID[0][0]]
    assert f["path"].iloc[0] == str(root.parent / TRAIN[0][0])
    assert all(Path(p).is_absolute() for p in f["path"])
    assert list(f["projection"]) == ["AP"] * 4 and f["age"].iloc[0] == 68
    assert f[rec.label_names].dtypes.eq(np.float32).all()
    both = load_records(root, frontal_only=False)
    assert len(both) == 5 and (both.frame["view"] == "lateral").sum() == 1
    assert value(both, TRAIN[1][0], "Lung Lesion") == 1.0


def test_label_order_is_csv_order_and_shuffle_keeps_labels_by_name(tmp_path: Path) -> None:
    rows = TRAIN * 3
    plain = load_records(write_csv(tmp_path / "a" / P / "train.csv", rows).parent)
    assert plain.label_names == OBS
    shuffled_obs = list(np.random.default_rng(0).permutation(OBS))
    assert shuffled_obs != OBS
    shuffled = load_records(write_csv(tmp_path / "b" / P / "train.csv", rows, shuffled_obs).parent)
    assert shuffled.label_names == shuffled_obs
    for name in OBS:
        np.testing.assert_array_equal(plain.frame[name], shuffled.frame[name])


def test_valid_columns_in_other_order_are_matched_by_name(tmp_path: Path) -> None:
    base = tmp_path / P
    write_csv(base / "train.csv", TRAIN)
    write_csv(base / "valid.csv", VALID, OBS[::-1])
    rec = load_records(base)
    assert rec.label_names == OBS
    assert value(rec, VALID[0][0], "Edema") == 1.0 and value(rec, VALID[0][0], "Fracture") == 0.0


def test_detect_and_single_csv(root: Path) -> None:
    assert detect_format(root) == "chexpert"
    assert detect_format(root.parent) == "chexpert"  # holds CheXpert-v1.0-small/
    assert len(load_records(root.parent)) == 4
    only = load_records(root / "valid.csv")
    assert detect_format(root / "valid.csv") == "chexpert"
    assert len(only) == 1 and list(only.frame["orig_split"]) == ["val"]
    (root / "train.csv").unlink()
    assert len(load_records(root)) == 1  # only valid.csv present is fine


def test_empty_and_header_only_csv(tmp_path: Path) -> None:
    empty = tmp_path / "e" / "train.csv"
    empty.parent.mkdir()
    empty.write_text("")
    with pytest.raises(RareganError, match=r"e/train\.csv is empty"):
        load_records(empty.parent, format="chexpert")
    header = write_csv(tmp_path / "h" / "train.csv", [])
    with pytest.raises(RareganError, match=r"h/train\.csv has a header but no rows"):
        load_records(header.parent)


def test_missing_column_named(tmp_path: Path) -> None:
    file = tmp_path / "train.csv"
    file.write_text(
        "Path,Sex,Age,AP/PA,Edema\nCheXpert-v1.0-small/train/patient1/s/v.jpg,F,1,AP,1\n"
    )
    with pytest.raises(RareganError, match=r"train\.csv lacks column 'Frontal/Lateral'"):
        load_records(tmp_path)


@pytest.mark.parametrize("bad", ["2.0", "maybe", "NA", "nan", " inf"])
def test_unknown_label_value_names_line_column_value(tmp_path: Path, bad: str) -> None:
    rows = [*TRAIN[:2], (TRAIN[2][0], "Frontal", {"Pleural Other": bad})]
    write_csv(tmp_path / "train.csv", rows)
    shown = repr(float(bad)) if bad == "2.0" else repr(bad)
    pattern = rf"train\.csv line 4, column 'Pleural Other': unknown label value {shown}"
    with pytest.raises(RareganError, match=pattern):
        load_records(tmp_path)


def test_bad_view_and_path_and_policy(tmp_path: Path) -> None:
    write_csv(tmp_path / "v" / "train.csv", [(TRAIN[0][0], "Oblique", {})])
    with pytest.raises(RareganError, match=r"line 2, column 'Frontal/Lateral'.*'Oblique'"):
        load_records(tmp_path / "v")
    write_csv(tmp_path / "p" / "train.csv", [("CheXpert-v1.0-small/train/x/v.jpg", "Frontal", {})])
    with pytest.raises(RareganError, match=r"line 2: Path 'CheXpert-v1.0-small/train/x/v.jpg'"):
        load_records(tmp_path / "p")
    with pytest.raises(RareganError, match=r"'u_maybe'.*u_ones, u_zeros, u_ignore"):
        load_records(tmp_path / "v", uncertainty="u_maybe")


def test_a_column_that_is_no_chexpert_observation_is_ignored_and_named(tmp_path: Path) -> None:
    """An ICU 0/1 column must not become a 15th label trained and counted in the macro AUC."""
    base = tmp_path / P
    write_csv(
        base / "train.csv", [(p, v, {**vals, "ICU": "1"}) for p, v, vals in TRAIN], OBS + ["ICU"]
    )
    write_csv(base / "valid.csv", VALID)
    rec = load_records(base)
    assert "ICU" not in rec.label_names and rec.label_names == OBS
    assert "ICU" not in rec.frame.columns
    assert rec.info["ignored_columns"].startswith("ignored column(s) ICU of train.csv")


def test_repeated_rows_are_dropped_and_conflicting_ones_refused(tmp_path: Path) -> None:
    base = tmp_path / P
    write_csv(base / "train.csv", [*TRAIN, TRAIN[0]])
    write_csv(base / "valid.csv", VALID)
    rec = load_records(base)
    once = tmp_path / "once" / P
    write_csv(once / "train.csv", TRAIN)
    write_csv(once / "valid.csv", VALID)
    assert len(rec.frame) == len(load_records(once).frame)
    assert rec.info["repeated_rows"].startswith("dropped 1 repeated row")
    flipped = (
        TRAIN[0][0],
        TRAIN[0][1],
        {**TRAIN[0][2], "Fracture": "0.0" if TRAIN[0][2].get("Fracture") == "1.0" else "1.0"},
    )
    write_csv(base / "train.csv", [*TRAIN, flipped])
    with pytest.raises(
        RareganError, match=rf"lists image {TRAIN[0][0]} more than once with different values"
    ):
        load_records(base)

"""Kermany pneumonia loader: the real training split and small trees under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import touch_tree

from pipelines.data import detect_format, load_records
from pipelines.errors import RareganError


def test_real_training_split(shared_data: Path) -> None:
    root = shared_data / "chest_xray"
    assert detect_format(root) == "kermany"
    rec = load_records(root)
    assert rec.source == "kermany" and rec.task == "multiclass"
    assert rec.label_names == ["normal", "bacterial", "viral"]
    assert len(rec) == 5216 and set(rec.frame["orig_split"]) == {"train"}
    sums = rec.frame[rec.label_names].sum()
    assert sums.to_dict() == {"normal": 1341, "bacterial": 2530, "viral": 1345}
    np.testing.assert_array_equal(rec.labels.sum(axis=1), 1)
    by_id = rec.frame.set_index("image_id")
    assert (
        by_id.loc["train/PNEUMONIA/person1000_bacteria_2931.jpeg", "patient"] == "train/person1000"
    )
    assert by_id.loc["train/PNEUMONIA/person1000_virus_1681.jpeg", "patient"] == "train/person1000"
    assert by_id.loc["train/NORMAL/IM-0115-0001.jpeg", "patient"] == "train/IM-0115"
    assert by_id.loc["train/NORMAL/NORMAL2-IM-0383-0001.jpeg", "patient"] == "train/NORMAL2-IM-0383"
    assert by_id.loc["train/PNEUMONIA/person1000_virus_1681.jpeg", "viral"] == 1.0
    assert all(Path(p).is_file() for p in rec.frame["path"].iloc[::500])

    binary = load_records(root, task="binary")
    assert binary.task == "binary" and binary.label_names == ["normal", "pneumonia"]
    assert binary.frame[binary.label_names].sum().to_dict() == {"normal": 1341, "pneumonia": 3875}


def make_tree(base: Path, files: dict[str, list[str]]) -> Path:
    """chest_xray/<split>/<CLASS>/<name> with empty files; keys are 'split/CLASS'."""
    return touch_tree(base / "chest_xray", files)


def test_splits_keep_patients_apart(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_virus_2.jpeg"],
            "train/NORMAL": ["IM-0001-0001.jpeg", "IM-0001-0002.jpeg", ".DS_Store"],
            "val/NORMAL": ["NORMAL2-IM-0001-0001.jpeg", "odd-name.jpeg"],
            "test/PNEUMONIA": ["person1_virus_7.jpeg", "notes.txt"],
        },
    )
    assert detect_format(tmp_path) == "kermany"  # holds chest_xray/
    rec = load_records(tmp_path)
    f = rec.frame.set_index("image_id")
    assert f.loc["train/PNEUMONIA/person1_bacteria_1.jpeg", "patient"] == "train/person1"
    assert f.loc["test/PNEUMONIA/person1_virus_7.jpeg", "patient"] == "test/person1"
    assert f.loc["train/NORMAL/IM-0001-0002.jpeg", "patient"] == "train/IM-0001"
    assert f.loc["val/NORMAL/NORMAL2-IM-0001-0001.jpeg", "patient"] == "val/NORMAL2-IM-0001"
    assert f.loc["val/NORMAL/odd-name.jpeg", "patient"] == "val/odd-name"
    assert rec.frame["orig_split"].value_counts().to_dict() == {"train": 4, "val": 2, "test": 1}
    assert rec.info["skipped_files"] == [
        f"skipped 1 text files in {tmp_path / 'chest_xray/test/PNEUMONIA'} (convert or remove them to use them)"
    ]
    assert rec.targets().tolist() == [0, 0, 1, 2, 0, 0, 2]


def test_untyped_pneumonia_file_is_named(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person2_unknown_3.jpeg"]})
    with pytest.raises(RareganError, match=r"person2_unknown_3\.jpeg is in PNEUMONIA"):
        load_records(tmp_path)


def test_bad_task_and_missing_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"train/NORMAL": ["IM-0001-0001.jpeg"]})
    with pytest.raises(RareganError, match=r"task 'ordinal'"):
        load_records(root, format="kermany", task="ordinal")
    with pytest.raises(RareganError, match=rf"NORMAL,PNEUMONIA.*found in {tmp_path / 'empty'}"):
        (tmp_path / "empty").mkdir()
        load_records(tmp_path / "empty", format="kermany")


def test_a_class_folder_beside_normal_and_pneumonia_is_refused_not_dropped(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person2_virus_2.jpeg"],
            "train/NORMAL": ["IM-0001-0001.jpeg"],
            "train/COVID19": ["covid-1.png", "covid-2.png"],
        },
    )
    assert detect_format(tmp_path) == "kermany"
    with pytest.raises(
        RareganError,
        match=r"COVID19 holds 2 images that the Kermany reader ignores.*--format folders",
    ):
        load_records(tmp_path)

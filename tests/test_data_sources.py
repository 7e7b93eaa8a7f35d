"""Format detection and dispatch of load_records."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data import FORMATS, detect_format, load_records
from pipelines.errors import RareganError


def test_detect_real_sets(shared_data: Path) -> None:
    assert detect_format(shared_data / "nih_chestxray14_1000") == "nih"
    assert detect_format(shared_data / "nih_chestxray14_1000" / "Data_Entry_2017.csv") == "nih"
    assert detect_format(shared_data / "chest_xray") == "kermany"
    assert detect_format(shared_data / "chest_xray" / "train") == "kermany"
    assert detect_format(shared_data / "knee_kl") == "folders"
    assert detect_format(shared_data / "knee_kl" / "val") == "folders"


def test_forced_format_loads(shared_data: Path) -> None:
    rec = load_records(shared_data / "chest_xray", format="folders")
    assert rec.source == "folders" and rec.label_names == ["NORMAL", "PNEUMONIA"]
    assert rec.task == "binary" and len(rec) == 5216


def test_nonexistent_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(RareganError, match=rf"{tmp_path}/missing does not exist"):
        detect_format(tmp_path / "missing")
    with pytest.raises(RareganError, match=rf"{tmp_path}/missing does not exist"):
        load_records(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(
        RareganError, match=rf"format of {tmp_path}/empty; layouts understood: chexpert"
    ):
        detect_format(tmp_path / "empty")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(RareganError, match=r"other\.csv"):
        detect_format(other)


def test_unknown_format_and_option(shared_data: Path) -> None:
    with pytest.raises(
        RareganError, match="unknown data format 'dicom'; use one of " + ", ".join(FORMATS)
    ):
        load_records(shared_data / "knee_kl", format="dicom")
    with pytest.raises(RareganError, match="option 'uncertainty' does not apply to folders"):
        load_records(shared_data / "knee_kl", uncertainty="u_ones")
    with pytest.raises(
        RareganError, match="option 'task' does not apply to nih data; its options: none"
    ):
        load_records(shared_data / "nih_chestxray14_1000", task="binary")

"""prepare(): val carved when the source's val cannot select for a studied class; CheXpert's
uncertain labels are the policy's in train and unknown in val and test."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipelines.data.chexpert import UNCERTAIN
from pipelines.data.prepare import DataSpec, prepare
from pipelines.errors import RareganError


def test_uncertain_labels_are_unknown_in_val_and_test_and_follow_the_policy_in_train(
    phantom_root, tmp_path
):
    prepared = prepare(DataSpec(phantom_root, size=16, cache_dir=tmp_path), progress=False)
    frame = prepared.records.frame
    marks = frame[UNCERTAIN].fillna("").astype(str).str.split("|")
    seen = {"train": 0, "held": 0}
    for name in prepared.records.label_names:
        hit = marks.map(lambda m, name=name: name in m).to_numpy()
        train = hit & (frame["split"] == "train").to_numpy()
        held = hit & frame["split"].isin(["val", "test"]).to_numpy()
        assert (frame.loc[train, name] == 1.0).all()  # u_ones, the default policy
        assert frame.loc[held, name].isna().all()  # never scored as the policy's value
        seen["train"] += int(train.sum())
        seen["held"] += int(held.sum())
    assert seen["train"] > 0 and seen["held"] > 0, seen
    assert prepared.records.info["uncertain_unknown_in_val_test"] == seen["held"]


def test_val_is_carved_from_train_when_the_official_val_lacks_the_studied_class(
    phantom_root, tmp_path
):
    plain = prepare(DataSpec(phantom_root, size=16, cache_dir=tmp_path), progress=False)
    official = plain.records.frame["orig_split"] == "val"
    assert (plain.records.frame.loc[official, "Fracture"] > 0.5).sum() < 10  # too few to select on
    assert "val_carved" not in plain.records.info
    spec = DataSpec(phantom_root, size=16, cache_dir=tmp_path, studied=("Fracture",))
    carved = prepare(spec, progress=False)
    assert "Fracture" in carved.records.info["val_carved"]
    val = carved.split("val").frame
    positive_patients = carved.records.frame.loc[carved.records.frame["Fracture"] > 0.5, "patient"]
    share = val.loc[val["Fracture"] > 0.5, "patient"].nunique() / positive_patients.nunique()
    assert 0.05 <= share <= 0.2, share  # stratified: about the val share (0.1) of positive patients
    moved = carved.records.frame.set_index("image_id").loc[
        plain.records.frame.loc[official, "image_id"], "split"
    ]
    assert (moved == "train").any(), "the source's own val images join the pool"
    patients = {s: set(carved.split(s).frame["patient"]) for s in ("train", "val", "test")}
    assert not (patients["train"] & patients["val"]) and not (patients["val"] & patients["test"])
    assert np.isin(
        plain.records.frame.loc[official, "image_id"], carved.records.frame["image_id"]
    ).all()


def test_data_id_is_the_same_for_a_copy_elsewhere_and_changes_with_the_files(
    phantom_root, tmp_path
):
    """Run fingerprints hold data_id: a copy of the data in another folder, with other file times
    (another machine, another day), must give the same id; a changed image file must not."""
    import os
    import shutil

    here = prepare(DataSpec(phantom_root, size=16, cache_dir=tmp_path / "a"), progress=False)
    copy = tmp_path / "copy" / phantom_root.name
    shutil.copytree(phantom_root, copy)
    images = sorted(p for p in copy.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert len(images) == 400
    for path in images:
        os.utime(path, ns=(10**18, 10**18))
    there = prepare(DataSpec(copy, size=16, cache_dir=tmp_path / "b"), progress=False)
    assert there.store.key != here.store.key  # the cache key still tells the two apart
    assert there.data_id == here.data_id
    victim = images[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # one more byte
    changed = prepare(DataSpec(copy, size=16, cache_dir=tmp_path / "c"), progress=False)
    assert changed.data_id != here.data_id


def test_label_shares_parse_and_refuse_bad_repeated_or_out_of_range_items():
    """--rarefy and phantoms --prevalence share one NAME=SHARE parser (commas between items)."""
    from pipelines.data.prepare import parse_rarefy, parse_shares

    assert parse_rarefy("viral=0.05, Fracture = 1") == {"viral": 0.05, "Fracture": 1.0}
    assert parse_rarefy(None) == {} and parse_rarefy("") == {}
    for text, message in {
        "viral": "--rarefy item 'viral'",
        "viral=0": "SHARE in (0, 1]",
        "viral=1.2": "SHARE in (0, 1]",
        "viral=0.1,viral=0.2": "names 'viral' twice",
    }.items():
        with pytest.raises(RareganError, match=re.escape(message)):
            parse_rarefy(text)
    assert parse_shares("Fracture=0", "--prevalence", "x", allow_zero=True) == {"Fracture": 0.0}

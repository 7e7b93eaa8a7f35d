"""Patient-level stratified splits and nested fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.records import Records, make_frame
from pipelines.data.splits import (
    assign_splits,
    check_fractions,
    iterative_stratification,
    nested_fractions,
)
from pipelines.errors import RareganError

LABELS = ["Common", "Lung Lesion", "Fracture"]


def fake_records(n_patients=600, seed=0, orig_split=None) -> Records:
    """Multi-label records: 1-4 images per patient, rare labels shared within a patient."""
    rng = np.random.default_rng(seed)
    rows, labels = {"path": [], "patient": [], "image_id": [], "orig_split": []}, []
    for p in range(n_patients):
        k = int(rng.integers(1, 5))
        lesion, fracture = rng.random() < 0.04, rng.random() < 0.03
        for i in range(k):
            rows["path"].append(f"/x/p{p}_{i}.png")
            rows["patient"].append(f"p{p}")
            rows["image_id"].append(f"p{p}_{i}")
            rows["orig_split"].append(orig_split(p) if orig_split else "")
            labels.append([float(rng.random() < 0.3), float(lesion), float(fracture)])
    frame = make_frame(rows, LABELS, np.array(labels))
    return Records(frame, LABELS, "multilabel", "fake", Path("/x"))


def test_split_is_by_patient_and_stratified():
    rec = fake_records()
    split = assign_splits(rec, val=0.1, test=0.2, seed=1)
    per_patient = rec.frame.assign(split=split).groupby("patient")["split"].nunique()
    assert (per_patient == 1).all()
    patient_split = rec.frame.assign(split=split).groupby("patient")["split"].first()
    share = {s: np.mean(patient_split == s) for s in ("train", "val", "test")}
    assert share["test"] == pytest.approx(0.2, abs=0.03) and share["val"] == pytest.approx(
        0.1, abs=0.03
    )
    for label in ("Lung Lesion", "Fracture"):
        pos = rec.frame[label].to_numpy() > 0
        # rare positives land in every split, close to the requested shares
        counts = {s: int((pos & (split == s)).sum()) for s in ("train", "val", "test")}
        assert min(counts.values()) > 0, (label, counts)
        assert counts["test"] / pos.sum() == pytest.approx(0.2, abs=0.08)


def test_split_deterministic_by_seed():
    rec = fake_records()
    a, b, c = (assign_splits(rec, seed=s) for s in (3, 3, 4))
    assert (a == b).all() and not (a == c).all()


def test_official_splits_kept_and_missing_one_carved():
    rec = fake_records(orig_split=lambda p: "val" if p % 10 == 0 else "train")
    split = assign_splits(rec, val=0.1, test=0.1, seed=0)
    orig = rec.frame["orig_split"].to_numpy()
    assert (split[orig == "val"] == "val").all()
    assert not ((split == "val") & (orig != "val")).any()
    assert (split == "test").mean() == pytest.approx(0.1, abs=0.04)
    resplit = assign_splits(rec, val=0.1, test=0.1, seed=0, keep_official=False)
    assert not (resplit[orig == "val"] == "val").all()


def test_iterative_stratification_beats_random_on_rare_labels():
    rng = np.random.default_rng(0)
    counts = (rng.random((2000, 3)) < [0.3, 0.02, 0.01]).astype(float)
    sizes = np.ones(2000)
    fold = iterative_stratification(sizes, counts, [0.8, 0.2], rng)
    for j in range(3):
        share = counts[fold == 1, j].sum() / counts[:, j].sum()
        assert share == pytest.approx(0.2, abs=0.02)


def test_nested_fractions_are_nested_and_keep_rare_positives():
    rec = fake_records(n_patients=1500)
    train = rec.subset(assign_splits(rec, seed=0) == "train")
    masks = nested_fractions(
        train, [1, 10, 25, 50, 75, 100], seed=5, rare=["Lung Lesion", "Fracture"]
    )
    assert list(masks) == [1.0, 10.0, 25.0, 50.0, 75.0, 100.0]
    keys = list(masks)
    for small, big in zip(keys, keys[1:], strict=False):
        assert not (masks[small] & ~masks[big]).any(), "fractions must be nested"
    assert masks[100.0].all()
    n_pat = train.frame["patient"].nunique()
    for f, m in masks.items():
        part = train.frame[m]
        assert part["patient"].nunique() == pytest.approx(f / 100 * n_pat, abs=2)
        for label in ("Lung Lesion", "Fracture"):
            assert (part[label] > 0).sum() >= 1, (f, label)
        # whole patients only
        assert set(part["patient"]).isdisjoint(set(train.frame.loc[~m, "patient"]))
    # stratified: the rare share at 50 % is close to half of all rare positives
    half = (train.frame.loc[masks[50.0], "Lung Lesion"] > 0).sum() / (
        train.frame["Lung Lesion"] > 0
    ).sum()
    assert half == pytest.approx(0.5, abs=0.12)


def test_nested_fractions_same_seed_same_patients():
    rec = fake_records()
    a = nested_fractions(rec, [10, 50], seed=2, rare=["Fracture"])
    b = nested_fractions(rec, [50, 10], seed=2, rare=["Fracture"])
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("bad", [0, -5, 100.5, "abc", float("nan")])
def test_bad_fraction_is_a_user_error(bad):
    with pytest.raises(RareganError, match="fraction"):
        check_fractions([bad])


def test_class_without_train_positives_is_a_user_error():
    rec = fake_records()
    rec.frame["Fracture"] = 0.0
    with pytest.raises(RareganError, match="'Fracture' has 0 positive"):
        nested_fractions(rec, [50], rare=["Fracture"])
    with pytest.raises(RareganError, match="unknown class 'Nope'"):
        nested_fractions(rec, [50], rare=["Nope"])


def test_split_shares_are_of_patients_not_images():
    rec = fake_records(n_patients=300)
    # one patient with as many films as everybody else together must not fill the test split alone
    big = rec.frame.iloc[[0] * len(rec.frame)].assign(patient="whale")
    rec = Records(
        pd.concat([rec.frame, big], ignore_index=True), LABELS, "multilabel", "fake", Path("/x")
    )
    split = assign_splits(rec, val=0.1, test=0.1, seed=0)
    per_split = rec.frame.assign(split=split).groupby("split")["patient"].nunique()
    assert per_split["test"] >= 25 and per_split["val"] >= 25


def test_gan_positives_lie_inside_the_classifier_fraction(phantom_root, tmp_path):
    """One mask per (data, split seed, fraction): the GAN never sees a patient the arms do not."""
    from pipelines.classifier.arms import train_rows
    from pipelines.data.prepare import DataSpec, prepare

    prepared = prepare(DataSpec(phantom_root, size=16, cache_dir=tmp_path), progress=False)
    classes = ["Fracture", "Lung Lesion", "Pleural Other"]
    for fraction in (10, 25, 50):
        for seed in (0, 1):
            # (Pleural Other has no certain test positive here, so the classifier studies two)
            train = set(train_rows(prepared, fraction, seed, classes[:2])["image_id"])
            assert train == set(train_rows(prepared, fraction, seed, classes[:1])["image_id"])
            for cls in classes:
                gan = set(prepared.positives(cls, fraction, seed)["image_id"])
                assert gan <= train, (fraction, seed, cls, len(gan - train))

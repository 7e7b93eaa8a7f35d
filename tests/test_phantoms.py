"""Phantoms: exact CheXpert layout and values, determinism, prevalences, findings really drawn."""

from __future__ import annotations

import argparse
import filecmp
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from pipelines.commands import phantoms as command
from pipelines.data import load_records
from pipelines.data.phantoms import (
    FINDINGS,
    PREVALENCE,
    phantom_table,
    render_phantom,
    sample_anatomy,
    write_phantoms,
)
from pipelines.errors import RareganError

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
PATH = re.compile(
    r"CheXpert-v1\.0-small/(train|valid)/patient(\d{5})/study(\d+)"
    r"/view([12])_(frontal|lateral)\.jpg"
)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A small phantom set at 64 px."""
    return write_phantoms(tmp_path_factory.mktemp("ph") / "out", n=80, size=64, seed=3)


def read(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(root / "train.csv"), pd.read_csv(root / "valid.csv")


def test_csv_header_and_values_are_chexperts(written):
    for name in ("train.csv", "valid.csv"):
        assert (written / name).read_text().splitlines()[0] == HEADER
    train, valid = read(written)
    assert (
        written.name == "CheXpert-v1.0-small" and len(train) + len(valid) == 80 and len(valid) > 0
    )
    for frame, split in ((train, "train"), (valid, "valid")):
        matches = [PATH.fullmatch(p) for p in frame["Path"]]
        assert all(m and m[1] == split for m in matches)
        assert [m[5] for m in matches] == frame["Frontal/Lateral"].str.lower().tolist()
        assert set(frame["Sex"]) <= {"Male", "Female"} and frame["Age"].dtype.kind == "i"
        frontal = frame["Frontal/Lateral"] == "Frontal"
        assert set(frame.loc[frontal, "AP/PA"]) <= {"AP", "PA"}
        assert frame.loc[~frontal, "AP/PA"].isna().all()
    labels = train[list(FINDINGS)].to_numpy()
    assert set(np.unique(labels[~np.isnan(labels)])) == {-1.0, 0.0, 1.0}
    assert np.isnan(labels).mean() > 0.3  # many blanks, as in CheXpert's train.csv
    assert set(np.unique(valid[["No Finding", *FINDINGS]].to_numpy())) <= {0.0, 1.0}
    # No Finding = 1 exactly when no pathology (Support Devices aside) is positive or uncertain
    for frame in (train, valid):
        sick = frame[list(FINDINGS[:-1])].isin([1.0, -1.0]).any(axis=1)
        assert ((frame["No Finding"] == 1) == ~sick).all()
    # the written labels are the table's, which the prevalence test checks
    table = phantom_table(80, seed=3).replace({"AP/PA": {"": np.nan}})
    both = pd.concat([train, valid]).set_index("Path").sort_index()
    pd.testing.assert_frame_equal(
        both, table.set_index("Path").sort_index()[both.columns], check_dtype=False
    )


def test_the_chexpert_loader_reads_them(written):
    records = load_records(written.parent, frontal_only=False)
    assert records.source == "chexpert" and len(records) == 80
    assert set(FINDINGS) <= set(records.label_names)
    assert records.frame["patient"].str.fullmatch(r"patient\d{5}").all()


def test_no_valid_csv_without_valid_patients(tmp_path):
    root = write_phantoms(tmp_path, n=5, size=32, valid_fraction=0.0)
    assert (root / "train.csv").is_file() and not (root / "valid.csv").exists()
    assert set(phantom_table(4, seed=0)["_split"]) == {"train", "valid"}  # one valid at least


def test_every_path_opens_as_grayscale_of_the_size(written):
    train, valid = read(written)
    for path in pd.concat([train, valid])["Path"]:
        with Image.open(written.parent / path) as img:
            assert img.format == "JPEG" and img.mode == "L" and img.size == (64, 64)
    assert sorted(p.name for p in written.parent.iterdir()) == [
        "CheXpert-v1.0-small"
    ]  # no temp left


def test_patients_have_several_images_and_are_on_one_side():
    table = phantom_table(2000, seed=0)
    patient = table["Path"].str.split("/").str[2]
    per = patient.value_counts()
    assert per.max() <= 4 and (per >= 3).sum() > 100 and per.mean() > 1.8
    assert 0.06 < (table["Frontal/Lateral"] == "Lateral").mean() < 0.14
    sides = table.groupby(patient)["_split"].nunique()
    assert (sides == 1).all()
    numbers = patient.str[-5:].astype(int)
    assert (numbers[table["_split"] == "valid"] >= 64541).all()
    assert 0.07 < (table["_split"] == "valid").mean() < 0.13
    # a patient's fracture is on most of their images, and the anatomy index is per patient
    frac = table.groupby(patient)["Fracture"].apply(lambda s: (s == 1).mean())
    assert frac[frac > 0].mean() > 0.75
    assert (table.groupby(patient)["_patient"].nunique() == 1).all()


def test_prevalences_are_near_targets():
    table = phantom_table(2000, seed=0)
    for name in FINDINGS:
        share = (table[name] == 1).mean()
        assert abs(share / PREVALENCE[name] - 1) < 0.3, (name, share)
    assert abs((table["Lung Lesion"] == 1).mean() - 0.041) < 0.01
    assert abs((table["Fracture"] == 1).mean() - 0.040) < 0.01
    assert abs((table["Pleural Other"] == 1).mean() - 0.016) < 0.005
    rare = phantom_table(2000, seed=0, prevalence={"Fracture": 0.2})
    assert abs((rare["Fracture"] == 1).mean() - 0.2) < 0.03
    with pytest.raises(RareganError, match="Fractures"):
        phantom_table(10, prevalence={"Fractures": 0.1})


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (
        write_phantoms(tmp_path / k, n=24, size=64, seed=s)
        for k, s in (("a", 5), ("b", 5), ("c", 6))
    )
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert len(files) == 24 + 3  # images, two CSVs, marker
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(a / "train.csv", c / "train.csv", shallow=False)
    img = "train/patient00001/study1/view1_frontal.jpg"
    assert not np.array_equal(np.asarray(Image.open(a / img)), np.asarray(Image.open(c / img)))


def pair(finding: str, k: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The same patient and pose rendered without and with one finding (as int arrays)."""
    anatomy = sample_anatomy(np.random.default_rng([11, k]))
    out = [
        render_phantom(np.random.default_rng(k), size, f, "frontal", anatomy)
        for f in (set(), {finding})
    ]
    return out[0].astype(int), out[1].astype(int)


@pytest.mark.parametrize("k", range(4))
def test_lung_lesion_is_a_compact_bright_blob_in_a_lung(k):
    base, lesion = pair("Lung Lesion", k)
    diff = lesion - base
    assert diff.min() >= -3 and diff.max() > 25
    blobs, count = ndimage.label(diff > 8)
    assert count == 1
    ys, xs = np.nonzero(blobs)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    assert 0.04 * 128 < max(h, w) < 0.3 * 128 and 0.7 < h / w < 1.4  # round, radius ~3-6 % of size
    assert len(ys) > 0.6 * np.pi * h * w / 4  # filled disc, not a ring
    body = base[base > 40]
    assert base[ys, xs].mean() < np.median(body)  # it sits on a dark lung field
    assert 0.15 * 128 < xs.mean() < 0.85 * 128 and 0.1 * 128 < ys.mean() < 0.8 * 128


@pytest.mark.parametrize("k", range(4))
def test_fracture_is_a_local_step_in_one_rib(k):
    base, broken = pair("Fracture", k)
    diff = broken - base
    changed = np.abs(diff) > 8
    ys, xs = np.nonzero(changed)
    assert len(ys) > 15 and changed.mean() < 0.03
    assert xs.max() < 64 or xs.min() >= 64  # one side of the chest
    assert np.ptp(ys) < 0.25 * 128  # one rib, not the whole cage
    assert (
        diff.max() > 15 and diff.min() < -15
    )  # bone moved: bright where it went, dark where it was


@pytest.mark.parametrize("k", range(4))
def test_pleural_other_runs_along_the_lateral_chest_wall(k):
    base, pleural = pair("Pleural Other", k)
    diff = pleural - base
    ys, xs = np.nonzero(diff > 10)
    assert diff.min() >= -3 and len(ys) > 40
    assert xs.max() < 64 or xs.min() >= 64  # one side
    assert np.ptp(ys) > 0.3 * 128  # long: along the wall
    widths = [np.ptp(xs[ys == y]) + 1 for y in np.unique(ys)]
    assert np.median(widths) < 0.1 * 128  # thin: a band, not a slab
    assert np.abs(xs - 63.5).mean() > 0.25 * 128  # lateral, not mediastinal


def test_lateral_view_and_common_findings_differ():
    anatomy = sample_anatomy(np.random.default_rng(2))

    def render(f: set[str], v: str = "frontal") -> np.ndarray:
        return render_phantom(np.random.default_rng(0), 96, f, v, anatomy)

    front, side = render(set()), render(set(), "lateral")
    assert front.shape == side.shape == (96, 96) and front.dtype == np.uint8
    assert np.abs(front.astype(int) - side).mean() > 10
    for name in ("Cardiomegaly", "Pleural Effusion", "Support Devices"):
        assert np.abs(render({name}).astype(int) - front).max() > 25, name
    assert np.array_equal(render({"Edema"}), front)  # label-only findings are not drawn
    with pytest.raises(ValueError, match="Fractures"):
        render({"Fractures"})


def test_unwritable_out_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RareganError, match=re.escape(str(blocker / "sub"))):
        write_phantoms(blocker / "sub", n=4, size=32)


def test_existing_folder_is_reused_replaced_or_refused(tmp_path):
    root = write_phantoms(tmp_path, n=6, size=32, seed=0)
    stamp = (root / "train.csv").stat().st_mtime_ns
    assert write_phantoms(tmp_path, n=6, size=32, seed=0) == root
    assert (root / "train.csv").stat().st_mtime_ns == stamp  # same parameters: reused
    write_phantoms(tmp_path, n=9, size=32, seed=0)
    assert sum(len(f) for f in read(root)) == 9  # other parameters: replaced
    real = tmp_path / "real" / "CheXpert-v1.0-small"
    real.mkdir(parents=True)
    (real / "train.csv").write_text("Path\n")
    with pytest.raises(RareganError, match="not a phantom set"):
        write_phantoms(tmp_path / "real", n=4, size=32)
    assert (real / "train.csv").read_text() == "Path\n"  # never overwritten


def test_command_writes_and_summarizes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path / "ph"), "--n", "12", "--size", "32", "--seed", "1"]
    )
    assert command.run(args) == 0
    line = capsys.readouterr().out.strip()
    assert (
        "\n" not in line and "12 images" in line and "Pleural Other" in line and "Fracture" in line
    )
    assert (tmp_path / "ph" / "CheXpert-v1.0-small" / "train.csv").is_file()
    args = parser.parse_args(["--out", str(tmp_path / "ph" / "CheXpert-v1.0-small" / "train.csv")])
    with pytest.raises(RareganError, match="train.csv"):
        command.run(args)


def test_command_sets_a_findings_share_and_refuses_a_malformed_one(tmp_path, capsys):
    """--prevalence "Lung Lesion=0.3" (the demo's class made common enough to learn in minutes); a
    malformed, repeated or unknown item is one user error naming the flag or the finding."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "ph"
    argv = ["--out", str(out), "--n", "200", "--size", "32", "--prevalence", "Lung Lesion=0.3"]
    assert command.run(parser.parse_args(argv)) == 0
    root = out / "CheXpert-v1.0-small"
    frame = pd.concat([pd.read_csv(root / "train.csv"), pd.read_csv(root / "valid.csv")])
    assert 0.2 < (frame["Lung Lesion"] == 1).mean() < 0.4  # CheXpert's own share is 0.041
    bad = {
        "Lung Lesion=x": "--prevalence item 'Lung Lesion=x'",
        "=0.1": "--prevalence item '=0.1'",
        "Fracture=1.5": "SHARE in [0, 1]",
        "Fracture=0.1,Fracture=0.2": "names 'Fracture' twice",
        "Lesion=0.1": "Lesion=0.1 is not a finding",
    }
    for text, message in bad.items():
        args = parser.parse_args(["--out", str(tmp_path / "other"), "--prevalence", text])
        with pytest.raises(RareganError, match=re.escape(message)):
            command.run(args)
    assert not (tmp_path / "other").exists()

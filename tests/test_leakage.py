"""Leakage guard: patient overlap, perceptual hashes, banded near-duplicate search, the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from PIL import Image

from pipelines.data import leakage
from pipelines.data.leakage import (
    check_patient_overlap,
    find_cross_split_duplicates,
    hamming,
    leakage_report,
    phash,
    pixel_digest,
)
from pipelines.data.store import build_store
from pipelines.errors import RareganError


@pytest.fixture(scope="module")
def nih(shared_data, tmp_path_factory):
    """The NIH subset: (paths, patients, store at 32 px)."""
    paths = [str(p) for p in sorted((shared_data / "nih_chestxray14_1000/images").glob("*.png"))]
    cache = tmp_path_factory.mktemp("store")
    store = build_store(paths, 32, cache_dir=cache, workers=2, progress=False)
    return paths, [Path(p).name[:8] for p in paths], store


def patient_split(patients: list[str], seed: int = 0) -> list[str]:
    ids = sorted(set(patients))
    choice = np.random.default_rng(seed).choice(
        ["train", "val", "test"], len(ids), p=[0.7, 0.1, 0.2]
    )
    of = dict(zip(ids, choice, strict=True))
    return [of[p] for p in patients]


def reference_phash(image: np.ndarray) -> int:
    """pHash by hand: exact area mean (repeat to a common multiple, block-average), DCT, bits."""
    side = image.shape[0]
    common = np.lcm(side, 32)
    up = np.repeat(np.repeat(image.astype(np.float64), common // side, 0), common // side, 1)
    small = up.reshape(32, common // 32, 32, common // 32).mean(axis=(1, 3))
    dct = scipy.fft.dct(scipy.fft.dct(small, norm="ortho", axis=0), norm="ortho", axis=1)
    block = dct[1:9, 1:9].ravel()
    bits = block > np.median(block)
    return sum(1 << k for k in range(64) if bits[k])


def test_patient_overlap_names_patients_and_total():
    check_patient_overlap(["a", "a", "b"], ["train", "train", "test"])
    with pytest.raises(
        RareganError, match=r"1 patient\(s\).*\bp7 \(test, train\).*split by patient"
    ):
        check_patient_overlap(["p7", "p7", "q"], ["train", "test", "train"])
    patients = [f"p{k}" for k in range(7) for _ in range(2)]
    splits = ["train", "val"] * 7
    with pytest.raises(RareganError, match=r"^7 patient\(s\)") as err:
        check_patient_overlap(patients, splits)
    assert str(err.value).count("(train, val)") == 5  # shows five, counts all seven


def test_nih_image_level_split_is_refused(nih):
    paths, patients, store = nih
    by_image = list(np.random.default_rng(1).choice(["train", "test"], len(paths)))
    with pytest.raises(RareganError, match=r"\d+ patient\(s\).*e\.g\. \d{8} \(test, train\)"):
        leakage_report(patients, by_image, np.arange(len(paths)), store)
    report = leakage_report(patients, patient_split(patients), np.arange(len(paths)), store)
    assert report.n_overlap_patients == 0 and report.n_exact == 0 and report.n_images == 1000
    assert "0 patients in more than one split" in report.summary()


def test_exact_duplicate_across_splits_refused_unless_allowed(nih, tmp_path):
    paths, patients, _ = nih
    paths, patients = paths[:200], patients[:200]
    splits = patient_split(patients)
    original = splits.index("train")
    copy = tmp_path / "copy_of_train_image.png"
    shutil.copy(paths[original], copy)
    all_paths = [*paths, str(copy)]
    store = build_store(all_paths, 32, cache_dir=tmp_path / "c", progress=False)
    args = ([*patients, "99999999"], [*splits, "test"], np.arange(201), store)
    with pytest.raises(RareganError, match=r"copy_of_train_image\.png.*--allow-duplicates"):
        leakage_report(*args)
    report = leakage_report(*args, allow_duplicates=True)
    assert report.n_exact == 1
    row = report.near_duplicates.iloc[0]
    assert (row.i, row.j, row.distance, bool(row.exact)) == (original, 200, 0, True)
    assert row.path_j == str(copy) and "exact duplicate images across splits: 1" in report.summary()


def test_near_duplicates_reported_unrelated_not(nih, tmp_path):
    paths, patients, _ = nih
    paths, patients = paths[:300], patients[:300]
    splits = patient_split(patients)
    rng = np.random.default_rng(3)
    source = [splits.index("train"), splits.index("val")]
    made = []
    for k, idx in enumerate(source):
        a = np.asarray(Image.open(paths[idx]).convert("L"), dtype=np.float64)
        noisy = np.clip(np.rint(a + rng.normal(0, 3, a.shape) - 12 * k), 0, 255).astype(np.uint8)
        made.append(tmp_path / f"near{k}.png")
        Image.fromarray(noisy).save(made[-1])
    all_paths = paths + [str(p) for p in made]
    store = build_store(all_paths, 32, cache_dir=tmp_path / "c", progress=False)
    report = leakage_report(
        [*patients, "x1", "x2"], [*splits, "test", "test"], np.arange(302), store
    )
    pairs = report.near_duplicates
    assert report.n_exact == 0
    assert set(zip(pairs.i, pairs.j, strict=True)) == {(source[0], 300), (source[1], 301)}
    assert (pairs.distance <= 2).all() and not pairs.exact.any()
    summary = report.summary()
    assert "phash distance <= 4): 2" in summary and "near1.png" in summary
    hashes = phash(store.array)
    assert np.median(hamming(hashes[:300], hashes[300])) > 16  # unrelated images are far


@pytest.mark.parametrize("size", [64, 50])
def test_phash_matches_hand_reference(nih, size):
    _, _, store = nih
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, (6, 1, size, size), dtype=np.uint8)
    images[:3, 0] = np.asarray(
        [Image.fromarray(store[k][0]).resize((size, size), Image.BICUBIC) for k in range(3)]
    )
    got = phash(images, batch=4)
    want = np.array([reference_phash(im[0]) for im in images], dtype=np.uint64)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, want)
    dim = rng.integers(20, 180, (size, size), dtype=np.uint8)
    h = phash(np.stack([dim, dim + np.uint8(60)])[:, None])
    assert h[0] == h[1]  # brightness shift only moves the DC term


def test_pixel_digest_exact_only(nih):
    _, _, store = nih
    images = np.array(store.array[:3])
    images[2] = images[0]
    changed = images[:1].copy()
    changed[0, 0, 5, 5] ^= 1
    d = pixel_digest(np.concatenate([images, changed]))
    assert d.dtype == np.dtype("S16") and len(d) == 4
    assert d[0] == d[2] and d[0] != d[1] and d[0] != d[3]


def brute_force(hashes, splits, max_distance):
    pairs = set()
    for i in range(len(hashes) - 1):
        dist = hamming(hashes[i + 1 :], hashes[i])
        for j in np.flatnonzero((dist <= max_distance) & (splits[i + 1 :] != splits[i])):
            pairs.add((i, i + 1 + int(j), int(dist[j])))
    return pairs


@pytest.mark.parametrize(("max_distance", "budget"), [(4, None), (2, None), (0, None), (7, 50)])
def test_banded_search_equals_brute_force(monkeypatch, max_distance, budget):
    if budget:
        monkeypatch.setattr(leakage, "_PAIR_BUDGET", budget)  # exercise chunked pair generation
    rng = np.random.default_rng(max_distance)
    n = 3000
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    for k in range(300):  # planted near pairs at 0..8 flipped bits
        i, j = rng.choice(n, 2, replace=False)
        flips = rng.choice(64, k % 9, replace=False)
        hashes[j] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes[100:130] = hashes[99]  # one big bucket of identical hashes
    digests = np.array([k.to_bytes(16, "little") for k in range(n)], dtype="S16")
    digests[100:130] = digests[99]
    splits = rng.choice(["train", "val", "test"], n)
    frame = find_cross_split_duplicates(hashes, digests, splits, max_distance)
    got = set(zip(frame.i, frame.j, frame.distance, strict=True))
    want = brute_force(hashes, splits, max_distance)
    assert got == want and len(got) == len(frame) and len(want) > 100
    assert (frame.i < frame.j).all() and (frame.split_i != frame.split_j).all()
    assert frame.distance.is_monotonic_increasing
    in_group = frame.i.between(99, 129) & frame.j.between(99, 129)
    assert frame.exact.eq(in_group).all()

"""Leakage guard: one patient in two splits, and the same (or nearly the same) image in two splits.

Perceptual hash (`phash`), after the pHash.org reference: area-mean resize to 32x32, orthonormal
2-D DCT-II, keep the 8x8 block of coefficients (u, v) with u, v in 1..8 (this skips the DC term,
i.e. overall brightness, and the 0th row/column), and set a bit where a coefficient exceeds the
median of the 64. A brightness shift leaves the hash unchanged; mild noise flips a few bits.
Near-duplicate search (`find_cross_split_duplicates`) uses multi-index hashing: with the 64 bits in
d+1 bands, two hashes within Hamming distance d agree exactly on at least one band (pigeonhole), so
only pairs sharing a band bucket are verified with a popcount.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft

from pipelines.data.store import Store
from pipelines.errors import RareganError

HASH_SIDE = 32  # resize side before the DCT
_PAIR_BUDGET = 4_000_000  # candidate pairs materialized at once


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that average each output cell's exact footprint on the input."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    left, right = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(right, px + 1) - np.maximum(left, px), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize(images: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """Area-mean resize of (N, H, W) images to (N, side, side) float64 (two large matmuls)."""
    n, h, w = images.shape
    rows, cols = _area_matrix(h, side), _area_matrix(w, side)
    narrow = images.reshape(n * h, w).astype(np.float64) @ cols.T  # (n*h, side)
    stacked = narrow.reshape(n, h, side).transpose(1, 0, 2).reshape(h, n * side)
    return (rows @ stacked).reshape(side, n, side).transpose(1, 0, 2)


def phash(images: np.ndarray, batch: int | None = None) -> np.ndarray:
    """64-bit DCT perceptual hashes (N,) uint64 of (N, 1, R, R) uint8 images."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, R, R), got shape {images.shape}")
    n, _, h, w = images.shape
    batch = batch or max(1, 2**22 // (h * w))
    out = np.empty(n, dtype=np.uint64)
    for s in range(0, n, batch):
        small = area_resize(np.asarray(images[s : s + batch, 0]))
        coeffs = scipy.fft.dctn(small, type=2, norm="ortho", axes=(1, 2))[:, 1:9, 1:9]
        flat = coeffs.reshape(len(coeffs), 64)
        bits = flat > np.median(flat, axis=1, keepdims=True)
        out[s : s + batch] = np.packbits(bits, axis=1, bitorder="little").view("<u8")[:, 0]
    return out


def pixel_digest(images: np.ndarray) -> np.ndarray:
    """16-byte blake2b digests (N,) of each image's stored bytes, for exact duplicates."""
    return np.array(
        [
            hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).digest()
            for im in images
        ],
        dtype="S16",
    )


_BYTE_POPCOUNT = np.array([bin(k).count("1") for k in range(256)], dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).astype(np.int64)
    return _BYTE_POPCOUNT[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance+1 bands covering the 64 bits as evenly as possible."""
    m = max_distance + 1
    widths = [64 // m + (k < 64 % m) for k in range(m)]
    shifts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _band_key(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
    return (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def _bucket_pairs(keys: np.ndarray):
    """Yield (i, j) index arrays of all pairs with equal keys, in bounded-size pieces."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    run_end = np.repeat(ends, ends - starts)  # for each sorted position, the end of its run
    later = run_end - np.arange(len(keys)) - 1  # partners after it in the same run
    pos = np.flatnonzero(later)
    cum = np.cumsum(later[pos])
    lo = 0
    while lo < len(pos):
        base = cum[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cum, base + _PAIR_BUDGET, side="right")))
        p, c = pos[lo:hi], later[pos[lo:hi]]
        first = np.repeat(p, c)
        offsets = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        yield order[first], order[first + offsets + 1]
        lo = hi


def find_cross_split_duplicates(
    hashes: np.ndarray,
    digests: np.ndarray,
    splits: Sequence[str],
    max_distance: int = 4,
) -> pd.DataFrame:
    """Pairs (i < j) in different splits with Hamming distance <= max_distance, nearest first."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    digests = np.asarray(digests)
    codes, names = pd.factorize(pd.Series(list(splits), dtype=object))
    if not len(hashes) == len(digests) == len(codes):
        raise ValueError("hashes, digests and splits must have one entry per image")
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be in [0, 63], got {max_distance}")
    bands = _bands(max_distance)
    keys = [_band_key(hashes, s, w) for s, w in bands]
    found_i, found_j = [], []
    for b, band_keys in enumerate(keys):
        for i, j in _bucket_pairs(band_keys):
            keep = codes[i] != codes[j]
            for earlier in keys[:b]:  # count each pair once: at the first band it shares
                keep &= earlier[i] != earlier[j]
            i, j = i[keep], j[keep]
            keep = hamming(hashes[i], hashes[j]) <= max_distance
            found_i.append(np.minimum(i[keep], j[keep]))
            found_j.append(np.maximum(i[keep], j[keep]))
    i = np.concatenate(found_i) if found_i else np.empty(0, np.int64)
    j = np.concatenate(found_j) if found_j else np.empty(0, np.int64)
    frame = pd.DataFrame(
        {
            "i": i.astype(np.int64),
            "j": j.astype(np.int64),
            "split_i": np.asarray(names, dtype=object)[codes[i]],
            "split_j": np.asarray(names, dtype=object)[codes[j]],
            "distance": hamming(hashes[i], hashes[j]),
            "exact": digests[i] == digests[j],
        }
    )
    return frame.sort_values(["distance", "i", "j"], ignore_index=True)


def check_patient_overlap(patients: Sequence[str], splits: Sequence[str]) -> None:
    """Refuse a split where a patient has images in more than one split."""
    if len(patients) != len(splits):
        raise ValueError("patients and splits must have one entry per image")
    frame = pd.DataFrame({"patient": list(patients), "split": list(splits)})
    per_patient = frame.groupby("patient", sort=True)["split"].unique()
    shared = per_patient[per_patient.map(len) > 1]
    if len(shared):
        shown = "; ".join(f"{p} ({', '.join(sorted(s))})" for p, s in shared.head(5).items())
        raise RareganError(
            f"{len(shared)} patient(s) have images in more than one split, e.g. {shown}; "
            "split by patient so that each patient's images all fall in one split"
        )


@dataclass
class LeakageReport:
    """What the guard found: patient overlap (0 when it passed), cross-split image pairs."""

    n_images: int
    n_overlap_patients: int
    near_duplicates: (
        pd.DataFrame
    )  # i, j (record positions), split_i, split_j, distance, exact, paths
    n_exact: int
    max_distance: int

    def summary(self, listed: Path | None = None) -> str:
        """A few human-readable lines (newline-separated); `listed`: the file holding every pair."""
        near = len(self.near_duplicates) - self.n_exact
        shown = min(3, len(self.near_duplicates))
        found = f"{near} found, {shown} shown" if near else "0 found"
        lines = [
            f"leakage guard: {self.n_images} images, "
            f"{self.n_overlap_patients} patients in more than one split",
            f"exact duplicate images across splits: {self.n_exact}",
            f"near-duplicates across splits (phash distance <= {self.max_distance}): {found}"
            + (f", all in {listed}" if listed and shown < len(self.near_duplicates) else ""),
        ]
        for row in self.near_duplicates.head(shown).itertuples():
            lines.append(
                f"  d={row.distance} {row.split_i}:{row.path_i} ~ {row.split_j}:{row.path_j}"
            )
        return "\n".join(lines)


def hash_rows(store: Store, rows: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """phash and pixel digests of the given store rows, reading the memmap in batches."""
    rows = np.asarray(rows, dtype=np.int64)
    hashes, digests = np.empty(len(rows), np.uint64), np.empty(len(rows), "S16")
    for s in range(0, len(rows), batch):
        images = store.array[np.sort(rows[s : s + batch])]
        back = np.argsort(np.argsort(rows[s : s + batch], kind="stable"), kind="stable")
        hashes[s : s + batch] = phash(images)[back]
        digests[s : s + batch] = pixel_digest(images)[back]
    return hashes, digests


def leakage_report(
    patients: Sequence[str],
    splits: Sequence[str],
    store_rows: np.ndarray,
    store: Store,
    allow_duplicates: bool = False,
    max_distance: int = 4,
) -> LeakageReport:
    """Check patients and images across splits; refuse overlap and exact duplicates."""
    if not len(patients) == len(splits) == len(store_rows):
        raise ValueError("patients, splits and store_rows must have one entry per record")
    check_patient_overlap(patients, splits)
    hashes, digests = hash_rows(store, store_rows)
    pairs = find_cross_split_duplicates(hashes, digests, splits, max_distance)
    rows = np.asarray(store_rows, dtype=np.int64)
    paths = np.asarray(store.paths, dtype=object)
    pairs["path_i"] = paths[rows[pairs["i"].to_numpy()]]
    pairs["path_j"] = paths[rows[pairs["j"].to_numpy()]]
    exact = pairs[pairs["exact"]]
    if len(exact) and not allow_duplicates:
        first = exact.iloc[0]
        raise RareganError(
            f"{len(exact)} identical image pair(s) fall in different splits, e.g. "
            f"{first.path_i} ({first.split_i}) and {first.path_j} ({first.split_j}); "
            "remove the duplicates or pass --allow-duplicates to go on anyway"
        )
    return LeakageReport(len(rows), 0, pairs, len(exact), max_distance)

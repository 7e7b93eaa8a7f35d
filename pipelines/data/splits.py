"""Patient-level splits (iterative stratification) and nested patient-level fractions of train."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipelines.data.records import Records
from pipelines.errors import RareganError


def patient_label_counts(
    records: Records, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique patients, their image counts and their positive-image counts per label (P, L)."""
    codes, patients = pd.factorize(records.frame["patient"], sort=True)
    n_img = np.bincount(codes, minlength=len(patients)).astype(np.float64)
    pos = np.nan_to_num(records.frame[list(labels)].to_numpy(np.float64), nan=0.0) > 0.5
    counts = np.zeros((len(patients), len(labels)))
    np.add.at(counts, codes, pos.astype(np.float64))
    return np.asarray(patients, dtype=object), n_img, counts


def iterative_stratification(
    sizes: np.ndarray, counts: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Assign groups to folds so each label's positives follow `fractions` (Sechidis et al. 2011).

    sizes: (P,) images per group; counts: (P, L) positives per group and label. Returns (P,) fold ids.
    Labels are served rarest first; each group carrying the label goes to the fold that most lacks it
    (ties: the fold that most lacks images, then random). Groups with no positives fill by size.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    frac = frac / frac.sum()
    n_groups, n_labels = counts.shape
    want_size = frac * sizes.sum()
    want_label = frac[:, None] * counts.sum(axis=0)[None, :]  # (K, L)
    fold = np.full(n_groups, -1, dtype=np.int64)
    has = counts > 0
    remaining = has.sum(axis=0).astype(np.int64)
    while True:
        open_labels = np.flatnonzero(remaining > 0)
        if len(open_labels) == 0:
            break
        lab = open_labels[np.argmin(remaining[open_labels])]
        members = np.flatnonzero(has[:, lab] & (fold < 0))
        for g in rng.permutation(members):
            need = want_label[:, lab]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                sz = want_size[best]
                best = best[sz == sz.max()]
            k = best[rng.integers(len(best))] if len(best) > 1 else best[0]
            fold[g] = k
            want_label[k] -= counts[g]
            want_size[k] -= sizes[g]
            remaining -= has[g]
    for g in rng.permutation(np.flatnonzero(fold < 0)):
        best = np.flatnonzero(want_size == want_size.max())
        k = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        fold[g] = k
        want_size[k] -= sizes[g]
    return fold


def assign_splits(
    records: Records,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify: Sequence[str] | None = None,
    keep_official: bool = True,
) -> np.ndarray:
    """Per-row split names ("train"/"val"/"test"), by patient, stratified on `stratify` labels.

    Official val/test rows of the source are kept when `keep_official`; the splits the source lacks are
    carved from the remaining patients (val and test as shares of patients, each label's patients spread
    in the same shares).
    """
    for name, value in (("val", val), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise RareganError(f"--{name} must be a fraction in [0, 1), not {value}")
    if val + test >= 1.0:
        raise RareganError(
            f"--val {val} plus --test {test} leaves no training data; use smaller fractions"
        )
    labels = list(stratify) if stratify else list(records.label_names)
    for name in labels:
        records.label_index(name)
    orig = records.frame["orig_split"].to_numpy(dtype=object)
    split = np.where(np.isin(orig, ("val", "test")) & keep_official, orig, "").astype(object)
    official = set(split[split != ""])
    carve = [s for s, f in (("val", val), ("test", test)) if s not in official and f > 0]
    pool = split == ""
    if carve:
        sub = records.subset(pool)
        patients, sizes, counts = patient_label_counts(sub, labels)
        fr = {"val": val, "test": test}
        fractions = [1.0 - sum(fr[s] for s in carve)] + [fr[s] for s in carve]
        # Balance patients (not images): one patient with 100 films must not fill a split alone.
        fold = iterative_stratification(
            np.ones_like(sizes),
            (counts > 0).astype(np.float64),
            fractions,
            np.random.default_rng(seed),
        )
        names = np.array(["train", *carve], dtype=object)
        by_patient = dict(zip(patients, names[fold], strict=True))
        split[pool] = sub.frame["patient"].map(by_patient).to_numpy(dtype=object)
    else:
        split[pool] = "train"
    return split.astype(str)


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """Validated fractions in percent, sorted ascending; a bad one is a user error."""
    out = []
    for f in fractions:
        try:
            value = float(f)
        except (TypeError, ValueError):
            raise RareganError(
                f"fraction {f!r} is not a number; give a percentage in (0, 100]"
            ) from None
        if not 0.0 < value <= 100.0 or math.isnan(value):
            raise RareganError(f"fraction {f!r} is out of range; give a percentage in (0, 100]")
        out.append(value)
    return sorted(set(out))


def fraction_order(records: Records, seed: int = 0, rare: Sequence[str] = ()) -> np.ndarray:
    """Train patients in the order fractions take them: every prefix is a nested fraction.

    Patients are grouped by their rarest requested positive label (or none); within a group they get
    evenly spaced random keys, so each prefix holds about the same share of every group. One positive
    patient of each rare class is put first, so every fraction keeps at least one positive of each.
    """
    rare = list(rare)
    for name in rare:
        records.label_index(name)
    patients, _, counts = patient_label_counts(records, rare)
    rng = np.random.default_rng(seed)
    key = np.empty(len(patients))
    group = np.full(len(patients), -1)
    for j in np.argsort(-counts.sum(axis=0), kind="stable"):  # rarest label set last, so it wins
        group[counts[:, j] > 0] = j
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        key[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    for j, name in enumerate(rare):
        positives = np.flatnonzero(counts[:, j] > 0)
        if len(positives) == 0:
            raise RareganError(
                f"class {name!r} has 0 positive images in the training split; "
                "choose another class or a larger dataset"
            )
        first = positives[np.argmin(key[positives])]
        key[first] = -1.0 - j
    return patients[np.argsort(key, kind="stable")]


def nested_fractions(
    records: Records, fractions: Sequence[float], seed: int = 0, rare: Sequence[str] = ()
) -> dict[float, np.ndarray]:
    """Row masks of `records` (the train split) per fraction in percent; smaller ⊂ larger.

    The patient order is stratified on every label with a train positive, never on the classes a
    caller happens to study: for one data set and split seed, the GAN of any class, the classifier
    and the data summary all see the same patients at each fraction. Each fraction keeps at least
    one positive patient of every such label; `rare` names classes that must have one (user error
    otherwise).
    """
    for name in rare:
        records.label_index(name)
    _, _, counts = patient_label_counts(records, records.label_names)
    present = [n for n, c in zip(records.label_names, counts.sum(axis=0), strict=True) if c > 0]
    missing = [n for n in rare if n not in present]
    if missing:
        fraction_order(records, seed, missing)  # raises the user error naming the class
    order = fraction_order(records, seed, present)
    rank = pd.Series(np.arange(len(order)), index=order)
    patient_rank = records.frame["patient"].map(rank).to_numpy()
    out = {}
    for f in check_fractions(fractions):
        n = max(len(present), math.ceil(f / 100.0 * len(order)))
        out[f] = patient_rank < n
    return out

"""Synthetic chest-radiograph phantoms written in the CheXpert-v1.0-small layout.

Phantoms are smoke-test data, not science: crude geometric chest films (lungs, heart, spine, ribs,
clavicles) with a few findings drawn visibly, so that `make demo` and the CheXpert loader run on a
machine with no data. No result computed on them says anything about real radiographs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipelines.errors import RareganError

ROOT_NAME = "CheXpert-v1.0-small"
MARKER = "phantoms.json"  # written last inside the root: parameters of the phantom set
VERSION = 2
# Per image, near CheXpert's training set: positive (1), and among the others uncertain (-1) and
# explicitly negative (0); the rest are blank. Rare targets: Lung Lesion, Pleural Other, Fracture.
RATES = {
    "Enlarged Cardiomediastinum": (0.048, 0.06, 0.11),
    "Cardiomegaly": (0.12, 0.04, 0.06),
    "Lung Opacity": (0.47, 0.03, 0.05),
    "Lung Lesion": (0.041, 0.01, 0.01),
    "Edema": (0.23, 0.07, 0.12),
    "Consolidation": (0.066, 0.13, 0.14),
    "Pneumonia": (0.027, 0.09, 0.02),
    "Atelectasis": (0.15, 0.17, 0.01),
    "Pneumothorax": (0.087, 0.02, 0.28),
    "Pleural Effusion": (0.38, 0.08, 0.26),
    "Pleural Other": (0.016, 0.012, 0.01),
    "Fracture": (0.040, 0.005, 0.02),
    "Support Devices": (0.52, 0.01, 0.06),
}
FINDINGS = tuple(RATES)
PREVALENCE = {name: r[0] for name, r in RATES.items()}
LABELS = ("No Finding", *FINDINGS)
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELS)
DRAWN = {"Lung Lesion", "Pleural Other", "Fracture", "Cardiomegaly", "Pleural Effusion",
         "Support Devices", "Enlarged Cardiomediastinum"}  # fmt: skip
PERSIST = 0.85  # chance a carrier's finding shows on each of their studies
IMAGES_PER_PATIENT = (0.35, 0.3, 0.2, 0.15)  # 1, 2, 3, 4 images
P_LATERAL = 0.2  # chance a study also has a lateral view (when the patient has images left)
FIRST_VALID_PATIENT = 64541  # CheXpert's valid patients are numbered from here


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest, in image units (x, y in [-1, 1], y down), shared by their films."""

    body_w: float
    neck_w: float
    shoulder_y: float
    lung_top: float
    lung_base: float
    lung_w: float
    gap: float
    heart_x: float
    heart_w: float
    heart_h: float
    med_w: float
    spine_w: float
    vert_h: float
    rib_y0: float
    rib_sp: float
    rib_curve: float
    rib_w: float
    clav_y: float
    air: float
    lesion: tuple[float, float, float, float]  # side, across-lung u, down-lung v, radius
    fracture: tuple[float, int, float, float]  # side, rib index, position t along rib, step
    pleural: tuple[float, float, float, float]  # side, thickness, lobulation phase, meniscus
    effusion: tuple[float, float]  # side (0 = both), level as a share of lung height
    device: tuple[float, float, float, float, float]  # line x0, bend, tip y; ECG lead x, y


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random patient: body habitus, organ sizes, rib spacing and where findings would sit."""
    u = rng.uniform
    side = lambda: float(rng.choice((-1.0, 1.0)))  # noqa: E731
    top = u(-0.8, -0.7)
    return Anatomy(
        body_w=u(0.82, 0.9), neck_w=u(0.22, 0.3), shoulder_y=top - u(0.08, 0.14),
        lung_top=top, lung_base=u(0.42, 0.55), lung_w=u(0.58, 0.66), gap=u(0.07, 0.1),
        heart_x=u(0.08, 0.14), heart_w=u(0.3, 0.36), heart_h=u(0.22, 0.28),
        med_w=u(0.11, 0.15), spine_w=u(0.06, 0.08), vert_h=u(0.11, 0.14),
        rib_y0=top + u(-0.06, 0.0), rib_sp=u(0.12, 0.145), rib_curve=u(0.5, 0.62),
        rib_w=u(0.36, 0.46), clav_y=top + u(0.0, 0.06), air=u(0.3, 0.38),
        lesion=(side(), u(0.35, 0.75), u(0.25, 0.6), u(0.08, 0.14)),
        fracture=(side(), int(rng.integers(2, 7)), u(0.35, 0.6), u(0.45, 0.55)),
        pleural=(side(), u(0.06, 0.09), u(0, 2 * np.pi), u(0.06, 0.12)),
        effusion=(float(rng.choice((-1.0, 1.0, 0.0))), u(0.15, 0.35)),
        device=(-u(0.14, 0.24), u(0.1, 0.2), top + u(0.35, 0.55), u(-0.6, 0.6), u(-0.4, 0.2)),
    )  # fmt: skip


def _sig(d: np.ndarray, edge: float) -> np.ndarray:
    """Soft step from 0 to 1 as d crosses 0: a linear ramp 2 * edge wide (cheaper than tanh)."""
    x = d * (0.5 / edge) + 0.5
    return np.minimum(np.maximum(x, 0.0, out=x), 1.0, out=x)


def _band(d: np.ndarray, half: float, edge: float) -> np.ndarray:
    """Soft band |d| < half."""
    return _sig(half - np.abs(d), edge)


def _frontal(X, Y, a: Anatomy, f: set[str], e: float, breath: float) -> np.ndarray:
    """Density map of a PA/AP chest film."""
    ax, side = np.abs(X), np.where(X < 0, -1.0, 1.0)
    bw = a.neck_w + (a.body_w - a.neck_w) * _sig(Y - a.shoulder_y, 0.06)
    body = _sig(bw - ax, e)
    D = body * (0.2 + 0.42 * np.sqrt(np.clip(1 - (ax / bw) ** 2, 0, 1)))
    # lungs: one lung field per side, mirrored; u across (0 medial, 1 lateral), v down
    base = a.lung_base + breath - 0.04 * (side < 0)
    h = base - a.lung_top
    uu, v = (ax - a.gap) / a.lung_w, (Y - a.lung_top) / h
    ul = 0.6 + 0.4 * np.sqrt(np.clip(v, 0, 1))
    ybot = base - 0.1 * np.sin(np.pi * np.clip(uu, 0, 1)) + 0.07 * uu
    top = a.lung_top + 0.6 * (uu - 0.4) ** 2

    def field(ul: np.ndarray, yb: np.ndarray) -> np.ndarray:
        return _sig(np.minimum(np.minimum(Y - top, yb - Y), np.minimum(ul - uu, uu) * a.lung_w), e)

    lung = field(ul, ybot)
    if "Pleural Other" in f:  # thickened pleura along the lateral wall, blunted costophrenic angle
        ps, thick, phase, men = a.pleural
        on = (side == ps) * _sig(v - 0.15, 0.04)
        ul = ul - on * thick * (1 + 0.35 * np.sin(9 * v + phase)) / a.lung_w
        ybot = ybot - (side == ps) * men * np.clip((uu - 0.5) / 0.5, 0, 1) ** 2
        free, lung = lung, field(ul, ybot)
        D = D + 0.1 * np.clip(free - lung, 0, 1)
    if "Pleural Effusion" in f:
        es, level = a.effusion
        men = ybot - level * h * (0.45 + 0.8 * np.clip(uu, 0, 1) ** 2)
        lung = lung * (1 - 0.92 * _sig(Y - men, 0.035) * ((es == 0) | (side == es)))
    # mediastinum, aortic knob, heart
    big = 1.3 if "Cardiomegaly" in f else 1.0
    hw, hh = a.heart_w * big, a.heart_h * (1 + 0.5 * (big - 1))
    hy = a.lung_base + breath - 0.6 * hh
    heart = _sig(1 - ((X - a.heart_x - 0.3 * (big - 1)) / hw) ** 2 - ((Y - hy) / hh) ** 2, 0.12)
    mw = a.med_w * (1.45 if "Enlarged Cardiomediastinum" in f else 1.0)
    med = _band(X - 0.02, mw, e) * _sig(Y - a.shoulder_y, e) * _sig(hy - Y, 0.1)
    knob = _sig(0.075 - np.hypot(X - mw - 0.02, Y - (hy - hh - 0.08)), e)
    solid = np.maximum(np.maximum(heart, med), knob)
    trachea = _band(X - 0.01, 0.035, e) * _sig(hy - hh - 0.2 - Y, 0.03)
    D = D - a.air * lung * (1 - solid) + 0.08 * heart + 0.06 * np.maximum(med, knob) - 0.1 * trachea
    D = D + 0.04 * lung * (1 - solid) * np.exp(
        -(((ax - a.gap - 0.12) / 0.1) ** 2) - ((Y - hy + hh) / 0.2) ** 2
    )
    # spine with vertebrae, clavicles
    D = D + 0.16 * _band(X, a.spine_w, e) * body * (0.7 + 0.3 * np.cos(np.pi * Y / a.vert_h) ** 2)
    cl = a.clav_y - 0.3 * (ax - 0.05) + 0.4 * (ax - 0.05) ** 2
    D = D + 0.16 * _band(Y - cl, 0.032, e) * _sig(0.6 - ax, 0.03) * _sig(ax - 0.04, 0.02)
    # posterior ribs: bright arcs from the spine out and down; anterior ribs fainter
    t = ax / (a.gap + a.lung_w + 0.05)
    p = (Y - a.rib_y0 + 0.15 * t - a.rib_curve * t * t) / a.rib_sp
    k = np.round(p)
    span = _sig(1.02 - t, 0.02) * _sig(t - 0.06, 0.02)
    rib = _band(p - k, a.rib_w / 2, 0.05) * (k >= 0) * (k < 9)
    if "Fracture" in f:
        fs, fk, ft, step = a.fracture
        here = (side == fs) * 1.0
        shifted = p - step * _sig(t - ft, 0.005) * np.clip(1 - (t - ft - 0.2) / 0.15, 0, 1)
        broken = _band(shifted - fk, a.rib_w / 2, 0.05) * (1 - _band(t - ft, 0.03, 0.005))
        callus = np.exp(-(((t - ft) / 0.04) ** 2) - ((p - fk - step / 2) / 0.7) ** 2)
        rib = rib + here * (broken - _band(p - fk, a.rib_w / 2, 0.05) + 0.8 * callus)
    pa = (Y - a.rib_y0 - 0.3 + 0.35 * t) / a.rib_sp
    ant = _band(pa - np.round(pa), 0.15, 0.06) * (pa > 0) * (pa < 7) * _sig(t - 0.3, 0.05)
    D = D + (0.12 * rib + 0.03 * ant) * span * body
    return D + _findings_common(
        X, Y, a, f, e, a.lung_top + a.lesion[2] * h, a.lesion[0] * (a.gap + a.lesion[1] * a.lung_w)
    )


def _lateral(X, Y, a: Anatomy, f: set[str], e: float, breath: float) -> np.ndarray:
    """Density map of a lateral chest film (anterior to the left): one lung field."""
    bw = 0.6 * a.neck_w + (0.78 - 0.6 * a.neck_w) * _sig(Y - a.shoulder_y, 0.08)
    body = _sig(bw - np.abs(X), e)
    D = body * (0.3 + 0.38 * np.sqrt(np.clip(1 - (X / bw) ** 2, 0, 1)))
    base = a.lung_base + breath
    h = base - a.lung_top
    ex, ey = (X - 0.02) / 0.56, (Y - (a.lung_top + base) / 2) / (h / 2)
    ybot = base - 0.12 * np.cos(np.clip(ex, -1, 1) * 1.4) + 0.06 * ex
    lung = _sig(1 - np.abs(ex) ** 2.4 - np.clip(-ey, 0, None) ** 2, 0.08) * _sig(ybot - Y, e)
    if "Pleural Effusion" in f:
        men = ybot - a.effusion[1] * h * (0.3 + 0.9 * np.clip(ex, 0, 1) ** 2)
        lung = lung * (1 - 0.9 * _sig(Y - men, 0.035))
    big = 1.25 if "Cardiomegaly" in f else 1.0
    hy = base - 0.7 * a.heart_h
    heart = _sig(1 - ((X + 0.22) / (0.28 * big)) ** 2 - ((Y - hy) / (a.heart_h * 1.15)) ** 2, 0.12)
    D = D - a.air * 1.1 * lung * (1 - heart) + 0.05 * heart
    xs = 0.56 + 0.05 * Y  # vertebral bodies, with dark discs, and the sternum in front
    vert = _band(X - xs, 0.1, e) * (0.5 + 0.5 * _band(np.cos(np.pi * Y / a.vert_h), 0.8, 0.1))
    sternum = _band(X + 0.7 + 0.1 * Y, 0.025, e) * _band(Y + 0.2, 0.45, e)
    D = D + 0.2 * vert * _sig(Y - a.shoulder_y, e) + 0.1 * sternum
    ribs = _band(np.sin(np.pi * (Y - 0.4 * X) / a.rib_sp), 0.25, 0.1) * _sig(X - 0.1, 0.1)
    D = D + 0.03 * ribs * lung
    return D + _findings_common(
        X, Y, a, f, e, a.lung_top + a.lesion[2] * h, -0.3 + 0.6 * a.lesion[1]
    )


def _findings_common(X, Y, a: Anatomy, f: set[str], e: float, ly: float, lx: float) -> np.ndarray:
    """Density of a lung nodule at (lx, ly) and of a tube with an ECG lead, when present."""
    D = np.zeros_like(X)
    if "Lung Lesion" in f:
        r2 = ((X - lx) ** 2 + (Y - ly) ** 2) / a.lesion[3] ** 2
        D = D + 0.4 * np.sqrt(np.clip(1 - r2, 0, 1))
    if "Support Devices" in f:
        x0, bend, tip, lead_x, lead_y = a.device
        line = x0 + bend * (Y + 1) ** 2
        D = D + 0.45 * _band(X - line, 0.012, 0.5 * e) * _sig(tip - Y, e)
        D = D + 0.4 * _band(np.hypot(X - lead_x, Y - lead_y) - 0.04, 0.01, 0.5 * e)
    return D


def render_phantom(
    rng: np.random.Generator,
    size: int,
    findings: set[str],
    view: str = "frontal",
    patient_params: Anatomy | None = None,
) -> np.ndarray:
    """One (size, size) uint8 film; pose, breath, exposure, blur and noise are jittered from rng."""
    unknown = set(findings) - set(FINDINGS)
    if unknown or view not in ("frontal", "lateral"):
        raise ValueError(f"unknown findings {sorted(unknown)} or view {view!r}")
    a = patient_params if patient_params is not None else sample_anatomy(rng)
    lo, hi = (-0.05, -0.04, -0.04, 0.95, -0.03, 0.95, -0.04, 0.8, -0.1, -0.1), (
        0.05, 0.04, 0.04, 1.05, 0.03, 1.2, 0.04, 1.2, 0.1, 0.1)  # fmt: skip
    ang, tx, ty, sc, breath, gain, bias, gamma, gx, gy = map(float, rng.uniform(lo, hi))
    blur, sigma = rng.uniform(0.5, 1.0), rng.uniform(0.012, 0.025)
    texture, noise = rng.standard_normal((2, size, size), dtype=np.float32)
    g = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    y0, x0 = np.meshgrid(g, g, indexing="ij")
    c, s = float(np.cos(ang)), float(np.sin(ang))
    X, Y = (c * x0 + s * y0) / sc - tx, (c * y0 - s * x0) / sc - ty
    e = 1.5 / size  # soft edges of about 1.5 px
    draw = set(findings) & DRAWN
    if view == "frontal":
        D = _frontal(X, Y, a, draw, e, breath)
    else:
        D = _lateral(X, Y, a, draw - {"Fracture", "Pleural Other"}, e, breath)
    st = size / 50  # mottled texture: filtered noise times 2 sqrt(pi) st has about unit variance
    D = D + 0.03 * 3.5 * st * gaussian_filter(texture, st) * (D > 0.1)
    img = np.clip(gain * D + bias, 0, 1) ** gamma * (1 + gx * X + gy * Y)
    img = gaussian_filter(img, blur * size / 128) + sigma * noise * np.sqrt(np.clip(img, 0.05, 1))
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def phantom_table(
    n: int, seed: int = 0, valid_fraction: float = 0.1, prevalence: dict | None = None
) -> pd.DataFrame:
    """CheXpert rows (COLUMNS) for n images plus `_patient` (anatomy index) and `_split`."""
    prev = dict(PREVALENCE)
    for name, p in (prevalence or {}).items():
        if name not in PREVALENCE or not 0 <= float(p) <= 1:
            raise RareganError(
                f"phantom prevalence {name}={p} is not a finding with a share in [0, 1]; "
                f"known findings: {', '.join(FINDINGS)}"
            )
        prev[name] = float(p)
    rng = np.random.default_rng(seed)
    people, studies, count = [], [], 0  # (sex, age); (patient, study number, views, AP/PA)
    while count < n:
        m = min(int(rng.choice(4, p=IMAGES_PER_PATIENT)) + 1, n - count)
        age = int(np.clip(rng.normal(61, 17), 18, 90))
        people.append(("Male" if rng.random() < 0.58 else "Female", age))
        done = 0
        while done < m:
            k = 2 if done + 1 < m and rng.random() < P_LATERAL else 1
            studies.append(
                (len(people) - 1, len(studies), k, "AP" if rng.random() < 0.75 else "PA")
            )
            done += k
        count += m
    pid = np.array([s[0] for s in studies])
    images = np.bincount(pid, weights=[s[2] for s in studies], minlength=len(people))
    # carriers: patients in random order until their expected positive images reach the quota
    q = np.array([max(PERSIST, prev[f]) for f in FINDINGS])
    carries = np.zeros((len(people), len(FINDINGS)), dtype=bool)
    for i, f in enumerate(FINDINGS):
        order = rng.permutation(len(people))
        own = q[i] * images[order]
        carries[order[np.cumsum(own) - own / 2 < prev[f] * n], i] = True
    unc, neg = (np.array([RATES[f][i] for f in FINDINGS]) for i in (1, 2))
    r = rng.random((3, len(studies), len(FINDINGS)))
    labels = np.where(carries[pid] & (r[0] < q), 1.0, np.nan)
    labels = np.where(np.isnan(labels) & (r[1] < unc), -1.0, labels)
    labels = np.where(np.isnan(labels) & (r[2] < neg / (1 - unc)), 0.0, labels)
    n_valid = min(
        max(round(valid_fraction * len(people)), int(valid_fraction > 0)), len(people) - 1
    )
    valid = set(rng.permutation(len(people))[:n_valid].tolist())
    numbers, counts, first = {}, {"train": 0, "valid": FIRST_VALID_PATIENT - 1}, {}
    out = []
    for (p, s_idx, k, appa), lab in zip(studies, labels, strict=True):
        split = "valid" if p in valid else "train"
        if p not in numbers:
            counts[split] += 1
            numbers[p], first[p] = counts[split], s_idx
        if split == "valid":  # CheXpert's valid labels are radiologist consensus: 1 or 0
            lab = np.where(lab == 1.0, 1.0, 0.0)
        clear = not np.any(np.isin(lab[:-1], (1.0, -1.0)))  # Support Devices does not count
        nofind = 1.0 if clear else (0.0 if split == "valid" else np.nan)
        sex, age = people[p]
        for j, view in enumerate(("frontal", "lateral")[:k], 1):
            folder = f"{ROOT_NAME}/{split}/patient{numbers[p]:05d}/study{s_idx - first[p] + 1}"
            ap = appa if view == "frontal" else ""
            out.append((f"{folder}/view{j}_{view}.jpg", sex, age, view.capitalize(), ap, nofind,
                        *lab, p, split))  # fmt: skip
    return pd.DataFrame(out, columns=[*COLUMNS, "_patient", "_split"])


def _write_into(root: Path, table: pd.DataFrame, size: int, seed: int) -> None:
    """Render every row of table as a JPEG under root and write train.csv and valid.csv."""
    anatomy: dict[int, Anatomy] = {}
    for i, row in enumerate(table.itertuples(index=False)):
        pid = int(row[-2])
        if pid not in anatomy:
            anatomy[pid] = sample_anatomy(np.random.default_rng([seed, 1, pid]))
        found = {name for name, v in zip(FINDINGS, row[6:19], strict=True) if v == 1.0}
        view = "frontal" if row[3] == "Frontal" else "lateral"
        img = render_phantom(np.random.default_rng([seed, 2, i]), size, found, view, anatomy[pid])
        path = root.parent / row[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, format="JPEG", quality=90)
    for split in ("train", "valid"):  # no valid.csv when no patient is in valid
        part = table[table["_split"] == split][list(COLUMNS)]
        if len(part):
            part.to_csv(root / f"{split}.csv", index=False, lineterminator="\n")


def write_phantoms(
    out: Path,
    n: int = 2000,
    size: int = 128,
    seed: int = 0,
    valid_fraction: float = 0.1,
    prevalence: dict | None = None,
) -> Path:
    """Write n phantom films under out/CheXpert-v1.0-small (atomically) and return that root."""
    if n < 1 or size < 32 or seed < 0 or not 0 <= valid_fraction < 1:
        raise RareganError(
            f"phantoms need n >= 1, size >= 32, seed >= 0 and 0 <= valid fraction < 1; "
            f"got n={n}, size={size}, seed={seed}, valid fraction={valid_fraction}"
        )
    out = Path(out)
    root = out / ROOT_NAME
    params = {"version": VERSION, "n": n, "size": size, "seed": seed,
              "valid_fraction": valid_fraction,
              "prevalence": dict(sorted((prevalence or {}).items()))}  # fmt: skip
    if root.exists():
        try:
            if json.loads((root / MARKER).read_text()) == params:
                return root  # the same phantoms are already there
        except (OSError, ValueError) as err:
            raise RareganError(
                f"{root} exists and is not a phantom set written by raregan; "
                "choose another --out or move that folder away"
            ) from err
    table = phantom_table(n, seed, valid_fraction, prevalence)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".phantoms-", dir=out))
    except OSError as err:
        raise RareganError(
            f"cannot write phantoms to {out}: {err.strerror or err}; give a writable --out"
        ) from err
    try:
        (tmp / ROOT_NAME).mkdir()
        _write_into(tmp / ROOT_NAME, table, size, seed)
        (tmp / ROOT_NAME / MARKER).write_text(json.dumps(params, indent=1) + "\n")
        if root.exists():  # an older phantom set (checked above): replace it
            root.rename(tmp / "old")
        (tmp / ROOT_NAME).rename(root)
    except OSError as err:
        raise RareganError(
            f"writing phantoms to {out} failed: {err}; free space or fix permissions"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root

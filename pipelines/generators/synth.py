"""Synthetic sets: images from a finished generator run of any kind (pipelines/generators), with
label rows sampled from its real positives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.data.synthetic import SYNTH_CSV
from pipelines.errors import RareganError
from pipelines.fingerprints import check_fingerprint, fingerprint, run_id, write_fingerprint
from pipelines.gan.run import class_tag, condition_labels
from pipelines.generators import load
from pipelines.images import save_png
from pipelines.machine import run_device
from pipelines.runs import check_replaceable, is_done, mark_done, staged_dir, write_json

LABEL_ROWS = ("gan", "copy_real")


def checkpoint_tag(at: dict) -> str:
    """The folder tag of a checkpoint's samples and figures: its name, "-raw" for its raw G."""
    return Path(at["name"]).stem + ("-raw" if at.get("generator") == "raw" else "")


def synthesize(
    run: Path,
    n: int | None = None,
    ratio: float | None = None,
    seed: int = 0,
    out: Path | None = None,
    only: str | list[str] | None = None,
    label_rows: str = "gan",
    redo: bool = False,
    checkpoint: Path | None = None,
    raw: bool = False,
    guidance: float | None = None,
) -> Path:
    """Write n synthetic images (or `ratio` per real positive) and their label rows; returns the folder.

    A real positive's row is drawn for each image; a label-conditional GAN is conditioned on that
    row's classes (a GAN of several classes pooled, without labels, writes them unknown, NaN), and
    `only` restricts the draw to the positives of one or some of its classes.
    `label_rows` says what the written row holds: "gan" (default) only what the GAN knows, i.e. its class(es)
    (1, or the conditioning 1/0 of a conditional GAN) and every other label unknown (NaN, masked
    in the loss; 0 for single-label tasks, where the class excludes the others); "copy_real" the
    drawn real positive's whole row, as Sundaram & Hulkund (2021) did. `checkpoint` samples the
    generator of one of the run's final-phase checkpoints instead of the finished one; `raw` its
    raw generator instead of the moving average (last.ckpt without `checkpoint`). `guidance`
    samples a class-conditional diffusion model at that classifier-free guidance instead of the
    one it was trained with (folder tag `-gG`; in the set's fingerprint).
    """
    if label_rows not in LABEL_ROWS:
        raise RareganError(
            f"unknown label rows {label_rows!r}; choose one of {', '.join(LABEL_ROWS)}"
        )
    G, summary = load(run, run_device(), checkpoint, raw)  # any kind's sampler
    if guidance is not None:
        guide(G, summary, run, guidance)
    at = summary.get("checkpoint")
    positives = pd.read_csv(Path(run) / "positives.csv")
    label_names = summary["label_names"]
    classes = summary.get("classes", [summary["class"]])
    wanted = [] if only is None else [only] if isinstance(only, str) else list(only)
    pooled = len(classes) > 1 and not summary.get("conditional")  # several classes, no labels
    if pooled and (wanted or label_rows == "copy_real"):
        what = "draw one of them" if wanted else "take a real positive's label row (copy_real)"
        raise RareganError(
            f"GAN run {run} learned {', '.join(classes)} pooled, without labels; it cannot {what} "
            "(train a label-conditional GAN, or fine-tune it on one class: --init-from)"
        )
    for cls in wanted:
        if cls not in classes:
            raise RareganError(
                f"GAN run {run} learned {', '.join(classes)}, not {cls!r}; choose one of those"
            )
    if wanted:
        positives = positives[(positives[wanted] > 0.5).any(axis=1)].reset_index(drop=True)
    only = "+".join(wanted) or None
    if n is None:
        n = int(round((ratio if ratio is not None else 1.0) * len(positives)))
    if n < 1:
        raise RareganError(f"asked for {n} synthetic images; give --n ≥ 1 or a positive --ratio")
    tag = (f"-{class_tag(wanted)}" if wanted else "") + (f"-{checkpoint_tag(at)}" if at else "")
    tag += guidance_tag(guidance)
    out = Path(out) if out else Path(run) / f"synth{tag}-n{n}-s{seed}"
    check_replaceable(out, "synth")
    raw_tag = ":raw" if raw else ""  # G_ema's sets keep the fingerprints they had
    which = {"checkpoint": f"{at['name']}@{at['kimg']}{raw_tag}"} if at else {}
    if guidance is not None:
        which["guidance"] = float(guidance)
    fp = fingerprint(gan=run_id(run), n=n, seed=seed, only=only or "", labels=label_rows, **which)
    if check_fingerprint(out, fp, redo) and is_done(out):
        return out
    rng = np.random.default_rng(seed)
    source = positives.iloc[rng.integers(len(positives), size=n)].reset_index(drop=True)
    labels = None
    if G.label_dim:
        labels = torch.from_numpy(condition_labels(source, classes))
    images = G.sample(n, seed=seed, labels=labels).numpy()
    with staged_dir(out, "synth") as tmp:
        (tmp / "images").mkdir()
        names = [f"images/synth_{i:06d}.png" for i in range(n)]
        for name, img in zip(names, images, strict=True):
            save_png(tmp / name, img)
        rows = pd.DataFrame(
            {
                "path": [str(out.resolve() / name) for name in names],
                "patient": f"synthetic:{Path(run).name}",
                "view": "frontal",
                "image_id": [f"synthetic:{Path(run).name}:s{seed}:{i}" for i in range(n)],
                "orig_split": "train",
                "synthetic": True,
            }
        )
        known = dict(zip(classes, condition_labels(source, classes).T, strict=True))
        if pooled:  # an image of one of its classes, which one unknown
            known = dict.fromkeys(classes, np.full(n, np.nan, dtype=np.float32))
        other = np.nan if summary.get("task", "multilabel") == "multilabel" else 0.0
        for label in label_names:
            if label_rows == "copy_real":
                rows[label] = source[label].to_numpy(dtype=np.float32)
            else:
                rows[label] = known.get(label, np.full(n, other, dtype=np.float32))
        rows["label_source_image_id"] = source["image_id"].to_numpy()
        rows["gan_run"] = str(Path(run).resolve())
        rows["gan_seed"] = seed
        rows.to_csv(tmp / SYNTH_CSV, index=False)
        write_json(
            tmp / "summary.json",
            {
                "n": n,
                "seed": seed,
                "gan_run": str(run),
                "class": only or summary["class"],
                "label_names": label_names,
                "label_rows": label_rows,
                **({"checkpoint": at} if at else {}),
            },
        )
        write_fingerprint(tmp, fp)
        mark_done(tmp)
    return out


def guidance_tag(guidance: float | None) -> str:
    """The folder tag of samples drawn at a chosen guidance ("-g2" for 2; "" for the trained one)."""
    return f"-g{guidance:g}" if guidance is not None else ""


def guide(G, summary: dict, run: Path, guidance: float) -> None:
    """Sample `G` (a class-conditional diffusion model's sampler) at classifier-free guidance
    `guidance`; a user error for any other generator or a negative value."""
    if summary.get("generator") != "diffusion" or not G.label_dim:
        raise RareganError(
            f"--guidance is for a class-conditional diffusion model; {run} is not one"
        )
    if not guidance >= 0:
        raise RareganError(f"--guidance must be ≥ 0, not {guidance!r}")
    G.hp = {**G.hp, "guidance": float(guidance)}


def samples_for(run: Path, classes: list[str], n: int) -> int:
    """Samples to draw so that about `n` are of `classes`: a conditional GAN draws its classes in
    the proportions of its training positives, so `classes` get n / (their share) draws."""
    summary = json.loads((Path(run) / "summary.json").read_text())
    if not summary.get("conditional"):
        return n
    positives = pd.read_csv(Path(run) / "positives.csv")
    share = float((positives[list(classes)] > 0.5).any(axis=1).mean())
    return math.ceil(n / share)

"""Evaluate a finished GAN run: domain FID/KID, memorization, diversity and the comparisons with
held-out real images (C2ST, FID/KID, precision/recall beside real baselines), into <run>/eval."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipelines.data.prefilter import expand
from pipelines.data.store import build_store
from pipelines.data.synthetic import load_synthetic
from pipelines.errors import RareganError
from pipelines.fidelity.c2st import MIN_PER_SIDE
from pipelines.fidelity.metrics import (
    HELDOUT_KEYS,
    classifier_feature_net,
    gan_eval,
    heldout_report,
    memorization_report,
    random_feature_net,
    save_closest_pairs_png,
)
from pipelines.fingerprints import file_sha256
from pipelines.gan.outputs import HELDOUT, POSITIVES
from pipelines.generators import load
from pipelines.generators.synth import checkpoint_tag, guidance_tag, synthesize
from pipelines.images import save_grid
from pipelines.runs import check_replaceable, source_runs, staged_dir, write_json


def feature_net(path: Path | None):
    """A classifier checkpoint's feature trunk, or None for the seeded random-feature net."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise RareganError(f"classifier checkpoint {path} not found")
    from classify import Classifier

    try:
        model = Classifier.load_from_checkpoint(path, map_location="cpu", pretrained=None)
    except Exception as err:  # wrong or damaged file
        raise RareganError(
            f"{path} is not a raregan classifier checkpoint ({type(err).__name__}: {err})"
        ) from None
    return classifier_feature_net(model.eval())


# at most this many synthetic images are evaluated (a seeded subsample): at 256 px, 5,000 images
# are 0.3 GB of uint8 and the blocked nearest-neighbour search stays within about 2 GB
MAX_EVAL_IMAGES = 5000


HELDOUT_MODES = ("auto", "require", "skip")


def stored_images(rows: pd.DataFrame, size: int, cache: Path) -> np.ndarray:
    """The images of a run's CSV rows (path column) as uint8 (N, 1, size, size), via the store."""
    return np.asarray(build_store(rows["path"].tolist(), size, "pad", cache, progress=False).view)


def seen_images(run: Path, size: int, cache: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """What a GAN run trained on: its positives' rows, their images and those after its own
    filter bank (uint8)."""
    positives = pd.read_csv(Path(run) / POSITIVES)
    originals = stored_images(positives, size, cache)
    seen, _ = expand(originals, yaml.safe_load((Path(run) / "config.yaml").read_text()))
    return positives, originals, seen


def strip_reals(
    summary: dict,
    positives: pd.DataFrame,
    originals: np.ndarray,
    seen: np.ndarray,
    rows: pd.DataFrame,
) -> tuple[np.ndarray, str]:
    """The real images the sample strip shows beside the samples, and their title: what the model
    saw (after its filter bank); for a class-conditional model, the originals of the classes its
    samples show (a set of one class beside that class's images, not every class's)."""
    classes = summary.get("classes", [summary["class"]])
    if not summary.get("conditional") or len(classes) < 2:
        return seen, summary["class"]
    shown = [c for c in classes if c in rows and (rows[c] > 0.5).any()] or classes
    keep = (positives[shown] > 0.5).any(axis=1).to_numpy()
    return originals[keep], "+".join(shown)


def images_key(images: np.ndarray) -> str:
    """A digest of a set of images: two runs that saw the same images get the same key."""
    return hashlib.sha256(images.tobytes()).hexdigest()


def sources_memorization(
    run: Path, own: np.ndarray, summary: dict, fake: np.ndarray, net, seed: int, cache: Path
) -> list:
    """For a fine-tuned GAN: the memorization check against the images of each GAN it started
    from, which it saw too (a source no longer on disk: its path and why it was not checked).
    A source that saw exactly the images of the run itself (`own`, checked by gan_eval) or of a
    source before it (one trained on in pieces) is not checked again: its entry names that run
    (same_images_as)."""
    out, checked = [], {images_key(own): str(run)}
    for source in source_runs(summary):
        if not (source / POSITIVES).is_file():
            out.append({"run": str(source), "skipped": "the source run is not on disk"})
            continue
        _, _, seen = seen_images(source, fake.shape[-1], cache)
        key = images_key(seen)
        if key in checked:
            out.append({"run": str(source), "same_images_as": checked[key]})
            continue
        checked[key] = str(source)
        out.append({"run": str(source), **memorization_report(seen, fake, net, seed)})
    return out


def skipped(reason: str) -> dict:
    """The held-out keys of a report whose held-out comparisons were not made, and why."""
    return {**dict.fromkeys(HELDOUT_KEYS), "heldout": {"skipped": reason}}


def heldout_block(
    run: Path,
    cls: str,
    train: np.ndarray,
    held: np.ndarray,
    fake: np.ndarray,
    net,
    seed: int,
    mode: str,
) -> dict:
    """heldout_report for one class (or the GAN's classes pooled); too few images: an error
    under mode "require", else the keys set to None with the reason."""
    try:
        if len(held) < MIN_PER_SIDE:
            raise RareganError(
                f"{run / HELDOUT} lists {len(held)} held-out real images of {cls} (val and test "
                f"positives of patients the GAN never saw); C2ST, precision/recall and the real "
                f"baselines need at least {MIN_PER_SIDE}: use larger --val/--test shares or a class "
                "with more positives, or skip them with --no-heldout"
            )
        return heldout_report(train, held, fake, net, seed)
    except RareganError as err:
        if mode == "require":
            raise
        return skipped(str(err))


def heldout_fidelity(
    run: Path,
    summary: dict,
    positives: pd.DataFrame,
    originals: np.ndarray,
    rows: pd.DataFrame,
    fake: np.ndarray,
    net,
    seed: int,
    mode: str,
    cache: Path,
) -> dict:
    """The held-out keys of a GAN's report: its classes pooled, and per class for a conditional GAN
    (per class, too few images always skip rather than raise)."""
    if mode == "skip":
        return skipped("skipped on request (--no-heldout)")
    if not (run / HELDOUT).is_file():
        return skipped(
            f"C2ST, precision/recall and the real baselines need a rerun of the GAN: {run} "
            f"has no {HELDOUT} (it was made by an older raregan)"
        )
    held_rows = pd.read_csv(run / HELDOUT)
    size = originals.shape[-1]
    held = stored_images(held_rows, size, cache) if len(held_rows) else originals[:0]
    out = heldout_block(run, summary["class"], originals, held, fake, net, seed, mode)
    classes = summary.get("classes", [summary["class"]])
    if summary.get(
        "conditional"
    ):  # per class for a label-conditional GAN; one pooled: together only
        out["per_class"] = {
            c: heldout_block(
                run,
                c,
                originals[(positives[c] > 0.5).to_numpy()],
                held[(held_rows[c] > 0.5).to_numpy()],
                fake[(rows[c] > 0.5).to_numpy()],
                net,
                seed,
                "auto",
            )
            for c in classes
        }
    return out


def eval_current(eval_json: Path, classifier: Path | None) -> bool:
    """Whether a GAN's eval.json was made in the feature space asked for: random features without
    a classifier; with one, that very checkpoint (eval.json holds its SHA-256)."""
    if not eval_json.is_file():
        return False
    report = json.loads(eval_json.read_text())
    made = report.get("feature_classifier")
    if classifier is None:
        return made is None and "feature_space" in report
    return made is not None and made.get("sha256") == file_sha256(classifier)


def evaluate_gan_run(
    run: Path,
    synth_dir: Path | None = None,
    n: int = 256,
    seed: int = 0,
    classifier: Path | None = None,
    inception_weights: Path | None = None,
    out: Path | None = None,
    cache: Path = Path("runs/store"),
    heldout: str = "auto",
    checkpoint: Path | None = None,
    raw: bool = False,
    guidance: float | None = None,
) -> tuple[dict, pd.DataFrame, Path]:
    """Write eval.json, nearest.csv, closest_pairs.png and real_vs_synthetic.png; return report, table, folder.

    FID/KID, memorization and diversity compare the samples with what the GAN saw: its positives
    after the run's filter bank; a GAN fine-tuned from others (gan.init_from) is also checked for
    copies of their training images (memorization_sources). The held-out comparisons
    (heldout_report) use the run's heldout.csv; `heldout` says what happens without enough
    held-out images: "auto" skips them with the reason in the report, "require" raises, "skip"
    never makes them. A run without
    heldout.csv (made before raregan wrote it) skips them, saying a rerun of the GAN would add
    them. A label-conditional GAN gets them for its classes pooled and under per_class.
    `checkpoint` evaluates one of the run's final-phase checkpoints (default folder
    <run>/eval-<checkpoint name>): the same figures at an earlier point of training; `raw` its raw
    generator instead of the moving average (<run>/eval-<checkpoint name>-raw; last.ckpt without
    `checkpoint`): what averaging the weights buys. `guidance`: a class-conditional diffusion
    model sampled at that classifier-free guidance (folder <run>/eval-gG).
    """
    if heldout not in HELDOUT_MODES:
        raise ValueError(f"heldout must be one of {HELDOUT_MODES}, got {heldout!r}")
    run = Path(run)
    if out is not None:
        check_replaceable(out, "gan-eval")  # before any work
    G, summary = load(run, checkpoint=checkpoint, raw=raw)  # any generator kind's sampler
    positives, originals, real = seen_images(run, G.resolution, cache)
    synth_dir = synth_dir or synthesize(
        run, n=n, seed=seed, checkpoint=checkpoint, raw=raw, guidance=guidance
    )
    rows, fake = load_synthetic(synth_dir, summary["label_names"])
    if len(fake) > MAX_EVAL_IMAGES:  # paper scale: a seeded subsample keeps memory bounded
        pick = np.sort(np.random.default_rng(seed).choice(len(fake), MAX_EVAL_IMAGES, False))
        rows, fake = rows.iloc[pick].reset_index(drop=True), fake[pick]
    net = feature_net(classifier)
    net = random_feature_net(G.resolution, seed) if net is None else net
    fidelity = heldout_fidelity(
        run, summary, positives, originals, rows, fake, net, seed, heldout, cache
    )
    report, nearest = gan_eval(real, fake, net=net, seed=seed, inception_weights=inception_weights)
    report.update({"run": str(run), "synthetic": str(synth_dir), "class": summary["class"]})
    if guidance is not None:
        report["guidance"] = float(guidance)
    report["feature_classifier"] = (
        {"path": str(classifier), "sha256": file_sha256(classifier)} if classifier else None
    )
    report.update(fidelity)
    if sources := sources_memorization(run, real, summary, fake, net, seed, cache):
        report["memorization_sources"] = sources
    at = summary.get("checkpoint")
    if at:
        report["checkpoint"] = at
    name = "eval" if not at else f"eval-{checkpoint_tag(at)}"
    out = Path(out) if out else run / (name + guidance_tag(guidance))
    with staged_dir(out, "gan-eval") as tmp:
        write_json(tmp / "eval.json", report)
        nearest.to_csv(tmp / "nearest.csv", index=False)
        save_closest_pairs_png(tmp / "closest_pairs.png", real, fake, nearest, k=16)
        shown, what = strip_reals(summary, positives, originals, real, rows)
        rng = np.random.default_rng(seed)
        pick_r = rng.choice(len(shown), size=min(8, len(shown)), replace=False)
        pick_f = rng.choice(len(fake), size=min(8, len(fake)), replace=False)
        save_grid(
            tmp / "real_vs_synthetic.png",
            [list(shown[pick_r]), list(fake[pick_f])],
            row_titles=["real", "synthetic"],
            title=f"{what}: real train positives vs "
            f"{'diffusion' if summary.get('generator') == 'diffusion' else 'GAN'} samples",
        )
    return report, nearest, out

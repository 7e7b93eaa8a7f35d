"""Evaluate a finished GAN run: domain FID/KID, memorization and diversity, written into <run>/eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipelines.data.prefilter import expand
from pipelines.data.store import build_store
from pipelines.data.synthetic import load_synthetic
from pipelines.errors import RareganError
from pipelines.gan.metrics import classifier_feature_net, gan_eval, save_closest_pairs_png
from pipelines.gan.synth import load_generator, synthesize
from pipelines.images import save_grid
from pipelines.runs import staged_dir, write_json


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


def evaluate_gan_run(
    run: Path,
    synth_dir: Path | None = None,
    n: int = 256,
    seed: int = 0,
    classifier: Path | None = None,
    inception_weights: Path | None = None,
    out: Path | None = None,
    cache: Path = Path("runs/store"),
) -> tuple[dict, pd.DataFrame, Path]:
    """Write eval.json, nearest.csv, closest_pairs.png and real_vs_synthetic.png; return report, table, folder.

    The real side is what the GAN saw: its positives after the run's filter bank.
    """
    run = Path(run)
    _, summary = load_generator(run)
    positives = pd.read_csv(run / "positives.csv")
    size = torch.load(run / "generator_ema.pt", map_location="cpu", weights_only=False)["hparams"][
        "resolution"
    ]
    real = build_store(positives["path"].tolist(), size, "pad", cache, progress=False).view
    real, _ = expand(np.asarray(real), yaml.safe_load((run / "config.yaml").read_text()))
    synth_dir = synth_dir or synthesize(run, n=n, seed=seed)
    _, fake = load_synthetic(synth_dir, summary["label_names"])
    if len(fake) > MAX_EVAL_IMAGES:  # paper scale: a seeded subsample keeps memory bounded
        fake = fake[np.sort(np.random.default_rng(seed).choice(len(fake), MAX_EVAL_IMAGES, False))]
    report, nearest = gan_eval(
        real, fake, net=feature_net(classifier), seed=seed, inception_weights=inception_weights
    )
    report.update({"run": str(run), "synthetic": str(synth_dir), "class": summary["class"]})
    out = Path(out) if out else run / "eval"
    with staged_dir(out, "gan-eval") as tmp:
        write_json(tmp / "eval.json", report)
        nearest.to_csv(tmp / "nearest.csv", index=False)
        save_closest_pairs_png(tmp / "closest_pairs.png", real, fake, nearest, k=16)
        rng = np.random.default_rng(seed)
        pick_r = rng.choice(len(real), size=min(8, len(real)), replace=False)
        pick_f = rng.choice(len(fake), size=min(8, len(fake)), replace=False)
        save_grid(
            tmp / "real_vs_synthetic.png",
            [list(real[pick_r]), list(fake[pick_f])],
            row_titles=["real", "synthetic"],
            title=f"{summary['class']}: real train positives vs GAN samples",
        )
    return report, nearest, out

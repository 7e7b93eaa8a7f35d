"""`raregan gan-eval`: domain FID/KID, memorization (nearest real images) and diversity of a GAN's samples."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.errors import RareganError
from pipelines.gan_eval import classifier_feature_net, gan_eval, save_closest_pairs_png
from pipelines.images import save_grid
from pipelines.runs import staged_dir, write_json
from pipelines.store import build_store
from pipelines.synth import load_synthetic, synthesize

NAME = "gan-eval"
HELP = "measure a GAN run: domain FID/KID, nearest real image of each sample (memorization), MS-SSIM diversity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, the samples, the feature space and the output folder."""
    parser.add_argument("--run", type=Path, required=True, help="a finished GAN run folder")
    parser.add_argument("--synth", type=Path, help="a synthetic set of the run (default: sample --n new images)")
    parser.add_argument("--n", type=int, default=256, help="samples to draw when --synth is not given")
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and statistics")
    parser.add_argument("--classifier", type=Path, help="classifier checkpoint whose features define FID/KID")
    parser.add_argument("--inception-weights", type=Path, help="local Inception FID weights (needs torch-fidelity)")
    parser.add_argument("--out", type=Path, help="output folder (default <run>/eval)")
    parser.add_argument("--cache", type=Path, default=Path("runs/store"), help="where decoded stores live")


def feature_net(path: Path | None):
    """A classifier checkpoint's feature trunk, or None for the seeded random-feature net."""
    if path is None:
        return None
    if not path.is_file():
        raise RareganError(f"classifier checkpoint {path} not found")
    from classify import Classifier

    try:
        model = Classifier.load_from_checkpoint(path, map_location="cpu", pretrained=None)
    except Exception as err:  # wrong or damaged file
        raise RareganError(f"{path} is not a raregan classifier checkpoint ({type(err).__name__}: {err})") from None
    return classifier_feature_net(model.eval())


def run(args: argparse.Namespace) -> int:
    """Evaluate and write eval.json, nearest.csv, closest_pairs.png and real_vs_synthetic.png."""
    from pipelines.synth import load_generator

    _, summary = load_generator(args.run)
    positives = pd.read_csv(args.run / "positives.csv")
    size = torch.load(args.run / "generator_ema.pt", map_location="cpu", weights_only=False)["hparams"]["resolution"]
    real = build_store(positives["path"].tolist(), size, "pad", args.cache, progress=False).view
    synth_dir = args.synth or synthesize(args.run, n=args.n, seed=args.seed)
    _, fake = load_synthetic(synth_dir, summary["label_names"])
    report, nearest = gan_eval(real, fake, net=feature_net(args.classifier), seed=args.seed,
                               inception_weights=args.inception_weights)
    report.update({"run": str(args.run), "synthetic": str(synth_dir), "class": summary["class"]})
    out = args.out or args.run / "eval"
    with staged_dir(out) as tmp:
        write_json(tmp / "eval.json", report)
        nearest.to_csv(tmp / "nearest.csv", index=False)
        save_closest_pairs_png(tmp / "closest_pairs.png", real, fake, nearest, k=16)
        rng = np.random.default_rng(args.seed)
        pick_r = rng.choice(len(real), size=min(8, len(real)), replace=False)
        pick_f = rng.choice(len(fake), size=min(8, len(fake)), replace=False)
        save_grid(tmp / "real_vs_synthetic.png", [list(real[pick_r]), list(fake[pick_f])],
                  row_titles=["real", "synthetic"], title=f"{summary['class']}: real train positives vs GAN samples")
    n_copies = int(nearest["near_copy"].sum())
    print(f"{summary['class']}: domain FID {report['fid']:.4g}, KID {report['kid']:.3g}; "
          f"{n_copies} of {len(fake)} samples flagged as near-copies of a training image; written to {out}")
    return 0

"""`raregan gan-eval`: domain FID/KID, memorization (nearest real images) and diversity of a GAN's samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.gan.distances import space_label
from pipelines.gan.eval_run import evaluate_gan_run

NAME = "gan-eval"
HELP = "measure a GAN run: domain FID/KID, nearest real image of each sample (memorization), MS-SSIM diversity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, the samples, the feature space and the output folder."""
    parser.add_argument("--run", type=Path, required=True, help="a finished GAN run folder")
    parser.add_argument(
        "--synth", type=Path, help="a synthetic set of the run (default: sample --n new images)"
    )
    parser.add_argument(
        "--n", type=int, default=256, help="samples to draw when --synth is not given"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and statistics")
    parser.add_argument(
        "--classifier", type=Path, help="classifier checkpoint whose features define FID/KID"
    )
    parser.add_argument(
        "--inception-weights", type=Path, help="local Inception FID weights (needs torch-fidelity)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default <run>/eval)")
    parser.add_argument(
        "--cache", type=Path, default=Path("runs/store"), help="where decoded stores live"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the headline figures."""
    report, nearest, out = evaluate_gan_run(
        args.run,
        args.synth,
        args.n,
        args.seed,
        args.classifier,
        args.inception_weights,
        args.out,
        args.cache,
    )
    n_copies = int(nearest["near_copy"].sum())
    print(
        f"{report['class']}: {space_label(report['feature_space'])} FID {report['fid']:.4g}, "
        f"KID {report['kid']:.3g}; "
        f"{n_copies} of {len(nearest)} samples flagged as near-copies of a training image; written to {out}"
    )
    return 0

"""`raregan synth`: synthesize labeled images from a finished GAN run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import add_sample_seed

NAME = "synth"
HELP = "write synthetic images and label rows (sampled from the real positives) from a finished GAN run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, how many images, the seed and the output folder."""
    parser.add_argument(
        "--run", type=Path, required=True, help="a finished GAN run folder (with DONE)"
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--n", type=int, help="number of synthetic images")
    how.add_argument("--ratio", type=float, help="synthetic images per real positive (default 1)")
    parser.add_argument(
        "--class",
        dest="only",
        help="for a GAN of several classes: draw label rows only from this class's positives",
    )
    add_sample_seed(parser, "the samples drawn (the GAN's latents, the diffusion model's noise)")
    parser.add_argument(
        "--label-rows",
        choices=["gan", "copy_real"],
        default="gan",
        help="the GAN's class(es) only, other labels unknown (gan, default), or a real positive's "
        "whole row (copy_real, as Sundaram & Hulkund 2021)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        metavar="G",
        help="a class-conditional diffusion model: classifier-free guidance to sample at "
        "(default: diffusion.guidance of its training)",
    )
    parser.add_argument(
        "--redo", action="store_true", help="replace an output made by other settings"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default <run>/synth-n<N>-s<sample seed>)"
    )


def run(args: argparse.Namespace) -> int:
    """Synthesize and print where the images and rows went."""
    from pipelines.generators.synth import (
        synthesize,  # torch loads when the command runs, not for --help
    )

    out = synthesize(
        args.run,
        n=args.n,
        ratio=args.ratio,
        seed=args.seed,
        out=args.out,
        only=args.only,
        label_rows=args.label_rows,
        redo=args.redo,
        guidance=args.guidance,
    )
    print(f"synthetic images and rows in {out} (synthetic.csv)")
    return 0

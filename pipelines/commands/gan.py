"""`raregan gan`: train a progressive-growing GAN on one class's training positives (resumable)."""

from __future__ import annotations

import argparse
import os

from pipelines.commands.common import (
    add_data_arguments,
    config_overrides,
    folder_arg,
    positive_float,
    print_data_notes,
    run_options,
    spec_from_args,
)
from pipelines.config import load_config
from pipelines.runs import run_path

NAME = "gan"
HELP = "train a PGGAN on a class's train positives (after the filter bank); checkpoints, samples, resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus class, fraction, config, output and devices."""
    add_data_arguments(parser, "fraction", "config", "kimg", run=True)
    parser.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        required=True,
        metavar="CLASS",
        help="the rare class to learn; several classes train one label-conditional GAN",
    )
    parser.add_argument(
        "--out",
        type=folder_arg,
        help="run folder (default runs/<dataset>/gan/<class>-f<fraction>-split<split seed>)",
    )
    parser.add_argument(
        "--no-filters",
        action="store_true",
        help="train on the positives alone, without the filter bank (the gan_nofilter arm's GAN)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_float,
        metavar="KIMG",
        help="thousands of images between checkpoints (default: gan.checkpoint_every_kimg, "
        "at most a fifth of the schedule, so every run writes several)",
    )


def gan_run_name(classes: list[str], fraction: float, seed: int, filters: bool = True) -> str:
    """Folder name of a GAN run: class(es), fraction, the data split seed (which fixes the fraction)
    and, without the filter bank, "-nofilter"."""
    from pipelines.gan.run import class_tag

    return f"{class_tag(classes)}-f{fraction:g}-split{seed}" + ("" if filters else "-nofilter")


def run(args: argparse.Namespace) -> int:
    """Prepare the data, then train or resume the GAN; print where its outputs are."""
    from pipelines.data.prepare import prepare  # torch and Lightning load only when a run starts
    from pipelines.gan.run import train_gan

    cfg = load_config(args.config, config_overrides(args, {"kimg": ("gan", "kimg_per_phase")}))
    if args.no_filters:
        cfg["filters"]["names"] = []
    if not args.size:
        args.size = cfg["gan"]["resolution"]
    spec = spec_from_args(args, cfg)
    cfg["data"].update(size=spec.size, seed=spec.seed)
    prepared = prepare(spec, progress=not args.no_progress)
    print_data_notes(prepared)
    out = args.out or run_path(
        args.runs,
        prepared.dataset_name,
        "gan",
        gan_run_name(args.classes, args.fraction, spec.seed, not args.no_filters),
    )
    strategy = "ddp_find_unused_parameters_true" if args.strategy == "ddp" else args.strategy
    train_gan(
        prepared,
        args.classes,
        args.fraction,
        cfg,
        out,
        run_options(args, strategy),
        checkpoint_every=args.checkpoint_every,
    )
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return 0  # DDP worker: rank 0 reports
    print(
        f"GAN for {' + '.join(args.classes)} done: {out} (samples/final.png, loss_curve.png, {out / 'generator_ema.pt'})"
    )
    return 0

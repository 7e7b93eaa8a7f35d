"""`raregan gan-ablation`: filter bank on/off × differentiable augmentation on/off for one class,
and GANs conditioned on other classes of the data."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import (
    add_data_arguments,
    folder_arg,
    positive_int,
    print_data_notes,
)
from pipelines.commands.settings import resolve_config

NAME = "gan-ablation"
HELP = "train GANs with the filter bank on/off × augmentation on/off at one budget and seeds; one table of their fidelity (C2ST, FID, precision/recall) and a grid per variant"
# pipelines.experiment.ablation's VARIANTS (not imported here: torch loads only when a run starts)
VARIANT_NAMES = (
    "filters+augment",
    "filters",
    "augment",
    "plain",
    "filters+conditional",
    "plain+conditional",
    "filters+balanced",
)
DEFAULT_VARIANTS = VARIANT_NAMES[:4]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus class, fraction, variants, seeds and the output folder."""
    add_data_arguments(parser, "fraction", "config", "kimg", "runs", "redo")
    parser.add_argument("--class", dest="cls", required=True, help="the rare class to learn")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        metavar="VARIANT",
        help="among filters+augment, filters, augment, plain (default: these four) and "
        "filters+conditional, plain+conditional, filters+balanced; augment uses the config's "
        "gan.augment policy, or every op with p 0.5 when the config has none; conditional trains "
        "one label-conditional GAN on the class and the --condition-on classes and measures the "
        "class alone; balanced does so drawing every class equally often (gan.class_balance 1, or "
        "the config's)",
    )
    parser.add_argument(
        "--condition-on",
        nargs="+",
        default=[],
        metavar="CLASS",
        help="the other classes a conditional variant learns beside the rare one (e.g. the "
        "abundant classes of the same data)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="GAN seeds, the same for every variant"
    )
    parser.add_argument(
        "--n", type=positive_int, default=256, help="samples per GAN for the measurements"
    )
    parser.add_argument(
        "--classifier",
        type=Path,
        help="classifier checkpoint whose features define FID and precision/recall (default: the "
        "seeded random-feature net, labelled as such)",
    )
    parser.add_argument("--name", default="ablation", help="name of the ablation")
    parser.add_argument(
        "--out", type=folder_arg, help="folder (default RUNS/<dataset>/gan-ablation/NAME)"
    )
    parser.add_argument("--progress", action="store_true", help="a progress bar for each GAN")


def run(args: argparse.Namespace) -> int:
    """Check the options, prepare the data, train and evaluate every GAN, print the table."""
    from pipelines.data.prepare import prepare  # torch and Lightning load only when a run starts
    from pipelines.experiment.ablation import Ablation, check_variants, run_ablation

    cfg, spec = resolve_config(
        args, {"kimg": ("gan", "kimg_per_phase")}, size_from=("gan", "resolution")
    )
    variants = check_variants(args.variants, args.condition_on)
    if args.condition_on:
        from pipelines.gan.run import require_conditional

        require_conditional(cfg, "gan-ablation")
    prepared = prepare(spec, progress=args.progress)
    print_data_notes(prepared)
    out = args.out or args.runs / prepared.dataset_name / "gan-ablation" / args.name
    ab = Ablation(
        args.cls,
        args.fraction,
        variants,
        list(dict.fromkeys(args.seeds)),
        out,
        args.n,
        args.classifier,
        args.progress,
        args.redo,
        tuple(dict.fromkeys(args.condition_on)),
    )
    table = run_ablation(ab, prepared, cfg, args.command_line)
    print((out / "table.md").read_text(encoding="utf-8"), end="")
    print(f"{len(table)} variants written to {out} (README.md, table.csv, grids)")
    return 0

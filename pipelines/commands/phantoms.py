"""`raregan phantoms`: write synthetic chest films in CheXpert-v1.0-small layout (smoke tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import non_negative_int

NAME = "phantoms"
HELP = (
    "write synthetic chest radiographs in the CheXpert-v1.0-small layout "
    "(smoke-test data for demos, not science)"
)
RARE = ("Lung Lesion", "Pleural Other", "Fracture")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--out, --n, --size, --seed, --prevalence."""
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write CheXpert-v1.0-small/ into"
    )
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed; same seed, same files (default 0)"
    )
    parser.add_argument(
        "--prevalence",
        metavar="FINDING=SHARE",
        help='share of images positive for findings, e.g. "Lung Lesion=0.1" (default: '
        "CheXpert's, Lung Lesion 0.041); several separated by commas",
    )


def run(args: argparse.Namespace) -> int:
    """Write the phantoms (or find the same ones already there) and print a one-line summary."""
    import pandas as pd  # loaded when the command runs, not for --help

    from pipelines.data.phantoms import write_phantoms
    from pipelines.data.prepare import parse_shares

    example = '"Lung Lesion=0.1"'
    prevalence = parse_shares(args.prevalence, "--prevalence", example, allow_zero=True)
    root = write_phantoms(args.out, n=args.n, size=args.size, seed=args.seed, prevalence=prevalence)
    frame = pd.concat([pd.read_csv(root / "train.csv"), pd.read_csv(root / "valid.csv")])
    patients = frame["Path"].str.split("/").str[2].nunique()
    lateral = int((frame["Frontal/Lateral"] == "Lateral").sum())
    rare = ", ".join(f"{name} {int((frame[name] == 1).sum())}" for name in RARE)
    print(
        f"phantoms (smoke-test data) at {root}: {len(frame)} images of {patients} patients, "
        f"{args.size} px, {lateral} lateral; positives: {rare}"
    )
    return 0

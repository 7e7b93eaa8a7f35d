"""`raregan data`: read a dataset, split it by patient, decode it once, check for leaks, summarize."""

from __future__ import annotations

import argparse

import pandas as pd

from pipelines.commands.common import add_data_arguments, spec_from_args
from pipelines.data.prepare import prepare, split_table
from pipelines.data.splits import nested_fractions

NAME = "data"
HELP = "read a dataset, split it by patient, decode it once, check for leaks, print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus what to summarize."""
    parser.add_argument(
        "--summary", action="store_true", help="print counts per split, label, patient and fraction"
    )
    add_data_arguments(
        parser,
        "classes",
        classes={"default": [], "help": "rare classes the fractions must keep positives of"},
    )
    parser.add_argument(
        "--fractions",
        nargs="*",
        type=float,
        default=[1, 10, 25, 50, 75, 100],
        help="nested train fractions (%%)",
    )


def fraction_table(train, fractions, seed, rare) -> pd.DataFrame:
    """Patients, images and rare-class positives in each nested fraction of train."""
    rows = []
    for f, mask in nested_fractions(train, fractions, seed, rare).items():
        part = train.frame[mask]
        row = {"fraction %": f, "patients": part["patient"].nunique(), "images": len(part)}
        for name in rare:
            row[name] = int((part[name] > 0.5).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("fraction %")


def run(args: argparse.Namespace) -> int:
    """Prepare the data and print what a user needs to trust it."""
    spec = spec_from_args(args)
    prepared = prepare(spec, progress=args.summary)
    rec = prepared.records
    print(
        f"{rec.source} data at {rec.root}: {len(rec)} images, {rec.frame['patient'].nunique()} patients, "
        f"task {rec.task}, {len(rec.label_names)} labels; store {prepared.store.size} px"
    )
    if rec.info.get("skipped"):
        print(f"skipped {rec.info['skipped']} non-image files")
    if args.summary:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print("\nper split (images with a positive label; unknown = NaN):")
            print(split_table(rec).T.to_string())
            train = prepared.split("train")
            print(f"\nnested fractions of train (seed {spec.seed}):")
            print(fraction_table(train, args.fractions, spec.seed, args.classes).to_string())
    print("\nleakage:")
    print(prepared.leakage.summary())
    return 0

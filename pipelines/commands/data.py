"""`raregan data`: read a dataset, split it by patient, decode it once, check for leaks, summarize."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.commands.common import add_data_arguments, print_data_notes, spec_from_args

if TYPE_CHECKING:  # the data layer (pandas, torch) loads when the command runs, not for --help
    import pandas as pd

    from pipelines.data.prepare import DataSpec
    from pipelines.data.records import Records

NAME = "data"
HELP = "read a dataset, split it by patient, decode it once, check for leaks, print a summary"
UNCERTAIN_TEXT = {"u_ones": "-1 → 1", "u_zeros": "-1 → 0", "u_ignore": "-1 → unknown"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus what to summarize."""
    parser.add_argument(
        "--summary", action="store_true", help="print counts per split, label, patient and fraction"
    )
    add_data_arguments(
        parser,
        "classes",
        every_data_option=True,
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
    import pandas as pd

    from pipelines.data.splits import nested_fractions

    rows = []
    for f, mask in nested_fractions(train, fractions, seed, rare).items():
        part = train.frame[mask]
        row = {"fraction %": f, "patients": part["patient"].nunique(), "images": len(part)}
        for name in rare:
            row[name] = int((part[name] > 0.5).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("fraction %")


def view_table(records: Records) -> pd.DataFrame:
    """Images, patients and positives per label for each view (unknown = NaN counted apart)."""
    import pandas as pd

    rows = []
    for view, part in records.frame.groupby("view", sort=True):
        row = {
            "view": view or "unknown",
            "images": len(part),
            "patients": part["patient"].nunique(),
        }
        for label in records.label_names:
            row[label] = int((part[label] > 0.5).sum())
            if part[label].isna().any():
                row[f"{label} (unknown)"] = int(part[label].isna().sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("view").fillna(0).astype(int)


def print_splits(rec: Records, spec: DataSpec, args: argparse.Namespace) -> None:
    """The per-split table and the nested fractions of train."""
    from pipelines.data.prepare import split_table

    print("\nper split (images with a positive label; unknown = NaN):")
    print(split_table(rec).T.to_string())
    train = rec.subset(rec.frame["split"] == "train")
    print(f"\nnested fractions of train (seed {spec.seed}):")
    print(fraction_table(train, args.fractions, spec.seed, args.classes).to_string())


def csv_summary(rec: Records, spec: DataSpec, args: argparse.Namespace) -> int:
    """CheXpert counts from its CSV alone, when none of its images is on disk: per view, split, fraction."""
    import pandas as pd

    from pipelines.data import load_records, map_labels, parse_label_map

    every = load_records(spec.data, "chexpert", **{**spec.options, "frontal_only": False})
    if spec.label_map:
        every = map_labels(every, parse_label_map(spec.label_map))
    policy = spec.options.get("uncertainty", "u_ones")
    print(
        f"chexpert CSV at {rec.root}: {len(every)} images of {every.frame['patient'].nunique()} "
        "patients listed; none of the image files is on disk, so these counts come from the CSV "
        "alone (no store, no leakage check)"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(f"\nper view (--uncertainty {policy}: {UNCERTAIN_TEXT[policy]}; blank → 0):")
        print(view_table(every).T.to_string())
        views = "all views" if not spec.options.get("frontal_only", True) else "frontal views only"
        print(
            f"\nused by runs ({views}): {len(rec)} images, {rec.frame['patient'].nunique()} patients"
        )
        print_splits(rec, spec, args)
    return 0


def run(args: argparse.Namespace) -> int:
    """Prepare the data and print what a user needs to trust it."""
    import pandas as pd

    from pipelines.data.prepare import load_split, prepare

    spec = spec_from_args(args)
    if args.summary and spec.format == "chexpert":
        rec = load_split(spec)
        if not any(map(os.path.exists, rec.frame["path"])):
            return csv_summary(rec, spec, args)
    prepared = prepare(spec, progress=args.summary)
    rec = prepared.records
    print(
        f"{rec.source} data at {rec.root}: {len(rec)} images, {rec.frame['patient'].nunique()} patients, "
        f"task {rec.task}, {len(rec.label_names)} labels; store {prepared.store.size} px"
    )
    print_data_notes(prepared)
    if args.summary:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print_splits(rec, spec, args)
    print("\nleakage:")
    print(prepared.leakage.summary(write_near_duplicates(prepared)))
    return 0


def write_near_duplicates(prepared) -> Path | None:
    """Every cross-split near-duplicate pair as a CSV beside the store; None when there are none."""
    from pipelines.runs import atomic_write_bytes

    pairs = prepared.leakage.near_duplicates
    if not len(pairs):
        return None
    path = prepared.store.data_path.with_name(f"{prepared.store.key}.near-duplicates.csv")
    atomic_write_bytes(path, pairs.to_csv(index=False).encode())
    return path

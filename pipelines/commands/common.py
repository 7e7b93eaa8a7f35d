"""Options every data-reading command shares, and the DataSpec they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.prepare import DataSpec, parse_rarefy


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --format and the options that decide splits and the store."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset root (CheXpert, NIH, Kermany or class folders)",
    )
    g.add_argument(
        "--format",
        choices=["chexpert", "nih", "kermany", "folders"],
        help="source format (default: detected)",
    )
    g.add_argument(
        "--uncertainty",
        choices=["u_ones", "u_zeros", "u_ignore"],
        help="CheXpert -1 policy (default u_ones)",
    )
    g.add_argument(
        "--all-views",
        action="store_true",
        help="CheXpert: keep lateral views too (default frontal only)",
    )
    g.add_argument(
        "--patient-pattern",
        help="class folders: regex with one group giving the patient id from the file name",
    )
    g.add_argument(
        "--task",
        choices=["multilabel", "multiclass", "binary", "ordinal"],
        help="override the source's task (Kermany: binary)",
    )
    g.add_argument(
        "--label-map",
        help='merge labels, e.g. "Lung Lesion=Nodule|Mass;Pleural Other=Pleural_Thickening"',
    )
    g.add_argument(
        "--rarefy",
        help="make classes rare in train, e.g. viral=0.05 keeps 5%% of viral train patients",
    )
    g.add_argument(
        "--size",
        type=int,
        help="stored image size in pixels (default: the config's, 64 for cpu-demo)",
    )
    g.add_argument(
        "--resize",
        choices=["pad", "crop"],
        default="pad",
        help="non-square images: pad or center-crop",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seed of the split and fractions (default 0)"
    )
    g.add_argument(
        "--val",
        type=float,
        default=0.1,
        help="val share of patients when the source has no val split",
    )
    g.add_argument(
        "--test",
        type=float,
        default=0.1,
        help="test share of patients when the source has no test split",
    )
    g.add_argument("--resplit", action="store_true", help="ignore the source's own val/test splits")
    g.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="do not refuse identical images across splits",
    )
    g.add_argument(
        "--cache", type=Path, default=Path("runs/store"), help="where decoded stores live"
    )
    g.add_argument("--workers", type=int, default=2, help="decode processes")


def source_options(args: argparse.Namespace, fmt: str) -> dict:
    """Loader options the user set, for the given format."""
    opts = {}
    if fmt == "chexpert":
        if args.uncertainty:
            opts["uncertainty"] = args.uncertainty
        if args.all_views:
            opts["frontal_only"] = False
    if fmt == "folders" and args.patient_pattern:
        opts["patient_pattern"] = args.patient_pattern
    if fmt in ("kermany", "folders") and args.task:
        opts["task"] = args.task
    return opts


def spec_from_args(args: argparse.Namespace, cfg: dict | None = None) -> DataSpec:
    """The DataSpec the command line describes (config values where the command line is silent)."""
    from pipelines.data import detect_format

    fmt = args.format or detect_format(args.data)
    return DataSpec(
        data=args.data,
        format=fmt,
        options=source_options(args, fmt),
        label_map=args.label_map,
        rarefy=parse_rarefy(args.rarefy),
        size=args.size or (cfg or {}).get("data", {}).get("size", 64),
        resize=args.resize,
        seed=args.seed,
        val=args.val,
        test=args.test,
        keep_official=not args.resplit,
        allow_duplicates=args.allow_duplicates,
        cache_dir=args.cache,
        workers=args.workers,
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where runs go, resuming, devices and progress: the options every training command shares."""
    g = parser.add_argument_group("run")
    g.add_argument("--runs", type=Path, default=Path("runs"), help="root of run folders")
    g.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    g.add_argument(
        "--devices",
        default="1",
        type=devices_arg,
        help="devices per node (Lightning): 1, 2 or auto",
    )
    g.add_argument(
        "--strategy", default="auto", help="Lightning strategy, e.g. ddp (GPUs or CPU processes)"
    )
    g.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def devices_arg(text: str) -> int | str:
    """Lightning's devices: an int count or a string like "auto"."""
    return int(text) if text.isdigit() else text


def config_overrides(args: argparse.Namespace, options: dict[str, tuple[str, str]]) -> dict:
    """Nested config overrides {section: {key: value}} from the options the user gave."""
    over: dict = {}
    for option, (section, key) in options.items():
        value = getattr(args, option, None)
        if value is not None and value != []:
            over.setdefault(section, {})[key] = value
    return over

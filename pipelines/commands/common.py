"""Options every data-reading command shares, and the DataSpec they make."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import RareganError

if TYPE_CHECKING:  # imported where used: --help must not load torch
    from pipelines.data.prepare import DataSpec
    from pipelines.fingerprints import RunOptions


from pipelines.commands.argtypes import (  # noqa: F401 (the shared types, re-exported)
    ACCELERATORS,
    accelerator_arg,
    devices_arg,
    folder_arg,
    folds_arg,
    non_negative_int,
    number_arg,
    positive_float,
    positive_int,
    strategy_arg,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def check_output_places(args: argparse.Namespace) -> None:
    """Refuse output folders that a run or --redo must never write over: /, the home folder, the
    repository's root, the data root or a folder inside it; --out also may not hold the data.

    A --runs root may hold the data (the demo's phantoms live in runs/phantoms): run folders go
    into subfolders of it, never over it."""
    data = getattr(args, "data", None)
    data = _resolved(data) if data is not None else None
    home = _resolved(Path.home())
    for option in ("out", "runs", "results"):
        given = getattr(args, option, None)
        if given is None:
            continue
        path = _resolved(given)
        where = None
        if path == Path(path.anchor):
            where = "is the file system's root"
        elif path == home:
            where = "is your home folder"
        elif path == REPO_ROOT:
            where = "is raregan's repository root"
        elif data is not None and (path == data or data in path.parents):
            where = "is the data root or lies inside it"
        elif option == "out" and data is not None and path in data.parents:
            where = f"holds the data ({args.data})"
        if where:
            raise RareganError(
                f"--{option} {given} {where}; raregan writes (and with --redo replaces) what is "
                "there: choose a folder of its own"
            )


class DeprecatedAlias(argparse.Action):
    """Stores the value; an option given by an old name (the second of its names) prints one note
    saying its new name. Old names keep working for one release."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string != self.option_strings[0]:
            print(
                f"raregan: note: {option_string} is now {self.option_strings[0]} (the old name "
                "goes in the next release)",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


class MovedToSet(argparse.Action):
    """A research knob that left the command's flags for the config: it still works for one
    release, hidden from --help, and says once which `--set` replaces it."""

    def __init__(
        self, option_strings, dest, key: str, nargs=None, const=None, also: str = "", **kwargs
    ):
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)
        self.key, self.also = key, also

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.nargs == 0 else values
        shown = f"[{','.join(map(str, value))}]" if isinstance(value, list) else value
        print(
            f"raregan: note: {option_string} is now --set {self.key}={shown}{self.also} (the flag "
            "goes in the next release)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, value)


def add_sample_seed(parser: argparse.ArgumentParser, what: str) -> None:
    """--sample-seed (old name --seed, with a note): the seed of the samples a command draws."""
    parser.add_argument(
        "--sample-seed",
        "--seed",
        dest="seed",
        type=non_negative_int,
        default=0,
        action=DeprecatedAlias,
        help=f"seed of {what} (default 0; --seed is its old name)",
    )


def moved_flag(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs) -> None:
    """Add a flag that moved to `--set key=…` (MovedToSet), hidden from --help."""
    if kwargs.pop("action", None) == "store_true":
        kwargs |= {"nargs": 0, "const": True}
    parser.add_argument(flag, action=MovedToSet, key=key, help=argparse.SUPPRESS, **kwargs)


_P = "patients when the source has no {} split"
# (flag, argparse keywords): the options that decide which images land where
DATA_OPTIONS = [
    ("--data", dict(type=Path, required=True, help="dataset root (CheXpert, NIH, Kermany or class folders)")),
    ("--format", dict(choices=["chexpert", "nih", "kermany", "folders"], help="source format (default: detected)")),
    ("--uncertainty", dict(choices=["u_ones", "u_zeros", "u_ignore"], help="CheXpert -1 policy (default u_ones)")),
    ("--all-views", dict(action="store_true", help="CheXpert: keep lateral views too (default frontal only)")),
    ("--patient-pattern", dict(help="class folders: regex with one group giving the patient id from the file name")),
    ("--task", dict(choices=["multilabel", "multiclass", "binary", "ordinal"], help="override the source's task (Kermany: binary)")),
    ("--label-map", dict(help='merge labels, e.g. "Lung Lesion=Nodule|Mass;Pleural Other=Pleural_Thickening"')),
    ("--rarefy", dict(help="make classes rare in train, e.g. viral=0.05 keeps 5%% of viral train patients")),
    ("--size", dict(type=positive_int, help="stored image size in pixels (default: the config's, 64 for cpu-demo)")),
    ("--resize", dict(choices=["pad", "crop"], help="non-square images: pad or center-crop (default: data.resize, pad)")),
    (("--split-seed", "--seed"), dict(dest="seed", type=non_negative_int, action=DeprecatedAlias, help="seed of the split and fractions (default: data.seed, 0; --seed is its old name)")),
    ("--val", dict(type=float, help="val share of " + _P.format("val") + " (default: data.val, 0.1)")),
    ("--test", dict(type=float, help="test share of " + _P.format("test") + " (default: data.test, 0.1)")),
    ("--resplit", dict(action="store_true", help="ignore the source's own val/test splits")),
    ("--allow-duplicates", dict(action="store_true", help="do not refuse identical images across splits")),
    ("--cache", dict(type=Path, default=Path("runs/store"), help="where decoded stores live")),
    ("--workers", dict(type=int, default=2, help="decode processes")),
]  # fmt: skip

# the data options every command lists; the others work everywhere and are listed by `raregan data`
DATA_SHOWN = ("--data", "--format", "--label-map", "--rarefy", "--split-seed")

# options several commands share, defined once: name → (flags, argparse keywords)
OPTIONS = {
    "config": (("--config",), dict(default="cpu-demo", help="preset name or YAML path")),
    "set": (("--set",), dict(action="append", default=[], metavar="KEY=VALUE", help="set any config key, e.g. --set gan.freeze_d=2 (repeatable; YAML values; after --config, before the other flags)")),
    "fraction": (("--fraction",), dict(type=float, default=100.0, help="train fraction in %% (default 100)")),
    "classes": (("--classes",), dict(nargs="*", help="rare classes (default: the config's compare.classes)")),
    "model": (("--model",), dict(help="classifier model (default: the config's classify.model)")),
    "epochs": (("--epochs",), dict(type=positive_int, help="override classify.epochs")),
    "redo": (("--redo",), dict(action="store_true", help="replace a run made by other settings (default: refuse it)")),
    "runs": (("--runs",), dict(type=folder_arg, default=Path("runs"), help="root of run folders")),
    "kimg": (("--kimg",), dict(type=positive_float, help="override gan.kimg_per_phase (thousands of images per phase)")),
}  # fmt: skip


def add_data_arguments(
    parser: argparse.ArgumentParser,
    *options: str,
    run: bool = False,
    every_data_option: bool = False,
    **changes: dict,
) -> None:
    """The data group (--data, --format, splits, store), the run group when `run`, then the shared
    `options` by name; `name={...}` changes that option's keywords for this command. Every data
    option works on every command; --help lists them all only with `every_data_option` (`raregan
    data`), elsewhere the DATA_SHOWN ones and a line naming the rest."""
    hidden = [f for f, _ in DATA_OPTIONS if flag_names(f)[0] not in DATA_SHOWN]
    more = ", ".join(flag_names(f)[0] for f in hidden)
    note = None if every_data_option else f"also {more}: see raregan data --help"
    group = parser.add_argument_group("data", note)
    for flag, kwargs in DATA_OPTIONS:
        if flag == "--size" and "config" not in options:  # no preset to take a default from
            kwargs = {**kwargs, "help": "stored image size in pixels (default 64)"}
        if not every_data_option and flag in hidden:
            kwargs = {**kwargs, "help": argparse.SUPPRESS}
        group.add_argument(*flag_names(flag), **kwargs)
    if run:
        add_run_arguments(parser)
    for name in options:
        flags, kwargs = OPTIONS[name]
        parser.add_argument(*flags, **{**kwargs, **changes.get(name, {})})
        if name == "config":
            flags, kwargs = OPTIONS["set"]
            parser.add_argument(*flags, **kwargs)


def flag_names(flag: str | tuple[str, ...]) -> tuple[str, ...]:
    """An option's names (DATA_OPTIONS holds one name or a tuple of them, the new name first)."""
    return (flag,) if isinstance(flag, str) else flag


def source_options(args: argparse.Namespace, fmt: str) -> dict:
    """Loader options the user set, for the given format."""
    opts = {}
    if getattr(args, "patient_pattern", None) and fmt != "folders":
        raise RareganError(
            f"--patient-pattern applies only to class folders, but {args.data} is {fmt} data; "
            "drop --patient-pattern"
        )
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


# data.* keys that a data option of the same name sets
DATA_KEYS = ("resize", "seed", "val", "test")


def spec_from_args(
    args: argparse.Namespace, cfg: dict | None = None, studied: list[str] | None = None
) -> DataSpec:
    """The DataSpec the command line describes; the split settings a flag leaves out come from the
    config's data section (resolve_config) or the defaults; `studied` rare classes default to the
    command's --classes / --class."""
    from pipelines.config import DEFAULTS
    from pipelines.data import detect_format
    from pipelines.data.prepare import DataSpec, parse_rarefy

    if studied is None:
        given = getattr(args, "classes", None) or getattr(args, "cls", None) or []
        studied = [given] if isinstance(given, str) else list(given)
    data = {**DEFAULTS["data"], **(cfg or {}).get("data", {})}
    picked = {k: getattr(args, k) if getattr(args, k) is not None else data[k] for k in DATA_KEYS}
    fmt = args.format or detect_format(args.data)
    return DataSpec(
        data=args.data,
        format=fmt,
        options=source_options(args, fmt),
        label_map=args.label_map,
        rarefy=parse_rarefy(args.rarefy),
        size=args.size or data["size"],
        resize=picked["resize"],
        seed=picked["seed"],
        val=picked["val"],
        test=picked["test"],
        keep_official=not args.resplit,
        allow_duplicates=args.allow_duplicates,
        cache_dir=args.cache,
        workers=args.workers,
        studied=tuple(studied),
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where runs go, resuming, devices and progress: the options every training command shares."""
    g = parser.add_argument_group("run")
    flags, kwargs = OPTIONS["runs"]
    g.add_argument(*flags, **kwargs)
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
        "--strategy",
        default="auto",
        type=strategy_arg,
        help="Lightning strategy, e.g. ddp (GPUs or CPU processes)",
    )
    g.add_argument("--accelerator", default="auto", type=accelerator_arg, help="cpu, gpu or auto")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    flags, kwargs = OPTIONS["redo"]
    g.add_argument(*flags, **kwargs)


def run_options(args: argparse.Namespace, strategy: str | None = None) -> RunOptions:
    """The RunOptions the run group of the command line describes."""
    from pipelines.fingerprints import RunOptions

    return RunOptions(
        resume=args.resume,
        redo=args.redo,
        devices=args.devices,
        strategy=strategy or args.strategy,
        accelerator=args.accelerator,
        progress=not args.no_progress,
    )


def config_overrides(args: argparse.Namespace, options: dict[str, tuple[str, str]]) -> dict:
    """Nested config overrides {section: {key: value}} from the options the user gave."""
    over: dict = {}
    for option, (section, key) in options.items():
        value = getattr(args, option, None)
        if value is not None and value != []:
            over.setdefault(section, {})[key] = value
    return over


def print_data_notes(prepared) -> None:
    """What preparing the data decided that a user must know (a carved val, uncertain labels)."""
    notes = {
        "val_carved": "{}",
        "uncertain_unknown_in_val_test": "{} uncertain (-1) labels in val/test are unknown (NaN), not scored",
    }
    for key, text in notes.items():
        if prepared.records.info.get(key):
            print(text.format(prepared.records.info[key]))
    info = prepared.records.info
    for line in [
        *info.get("skipped_files", []),
        info.get("ignored_columns"),
        info.get("repeated_rows"),
    ]:
        if line:
            print(f"raregan: warning: {line}")

"""`raregan compare`: the experiment — classes × fractions × arms × seeds, then tables and a report."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.arms import ARMS
from pipelines.commands.common import (
    add_data_arguments,
    folder_arg,
    moved_flag,
    positive_float,
    positive_int,
    print_data_notes,
)
from pipelines.commands.settings import resolve_config
from pipelines.errors import RareganError
from pipelines.runs import atomic_write_text, file_lock

if TYPE_CHECKING:  # the experiment (torch, Lightning) loads when the command runs, not for --help
    from pipelines.experiment.plan import Sweep

NAME = "compare"
HELP = "run the experiment (arms × fractions × seeds, a GAN per class, fraction and seed) and write tables, plots and a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus the sweep's axes."""
    add_data_arguments(parser, "classes", "model", "config", "runs", "redo")
    parser.add_argument(
        "--fractions", nargs="*", type=float, help="train fractions in %% (default: config)"
    )
    parser.add_argument(
        "--arms",
        nargs="*",
        help=f"arms among {', '.join(ARMS)} (what each trains on: pipelines/arms.py; "
        "default: the config's compare.arms)",
    )
    parser.add_argument("--seeds", nargs="*", type=int, help="classifier seeds (default: config)")
    # research knobs: config keys (--set); their old flags work for one release
    for flag, (section, key) in MOVED.items():
        moved_flag(
            parser,
            flag,
            f"{section}.{key}",
            dest=flag[2:].replace("-", "_"),
            **MOVED_ARGS.get(flag, {}),
        )
    parser.add_argument(
        "--name", default="sweep", help="name of the sweep (run folders and report)"
    )
    parser.add_argument(
        "--results",
        type=folder_arg,
        help="folder of the sweep's cell records (cells/), tables and report "
        "(default: RUNS/<dataset>/compare/NAME)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--collect",
        action="store_true",
        help="only rebuild the tables and report from the cell records (no training, no run folders)",
    )
    what.add_argument(
        "--list-cells",
        action="store_true",
        help="print the plan: one line per GAN unit and classifier cell, its index K, status and "
        "the cells it needs",
    )
    what.add_argument(
        "--cell",
        metavar="K",
        help="run only cell K (an index or id from --list-cells) and write its record; refused "
        "while a GAN it needs is not done",
    )
    parser.add_argument("--progress", action="store_true", help="progress bars for each training")


def sweep_command(line: str) -> str:
    """The command that runs (or continues) the whole sweep: `line` less --collect, --list-cells
    and --cell K, so a report says the same however its cells were run."""
    words, out = shlex.split(line), []
    for i, word in enumerate(words):
        after_cell = i > 0 and words[i - 1] == "--cell"
        flag = word.split("=", 1)[0]
        if flag not in ("--collect", "--list-cells", "--cell") and not after_cell:
            out.append(word)
    return shlex.join(out)


# flags that moved to `--set SECTION.KEY=…` (hidden; a note when used): flag → (section, key)
MOVED = {
    "--epochs": ("classify", "epochs"),
    "--kimg": ("gan", "kimg_per_phase"),
    "--synth-ratio": ("compare", "synth_ratio"),
    "--label-rows": ("compare", "label_rows"),
    "--conditional-gan": ("compare", "conditional_gan"),
    "--condition-on": ("compare", "condition_on"),
    "--transfer-from": ("compare", "transfer_from"),
    "--transfer-kimg": ("compare", "transfer_kimg"),
}
MOVED_ARGS = {
    "--epochs": {"type": positive_int},
    "--kimg": {"type": positive_float},
    "--synth-ratio": {"type": float},
    "--label-rows": {"choices": ["gan", "copy_real"]},
    "--conditional-gan": {"action": "store_true", "default": None},
    "--condition-on": {"nargs": "+", "metavar": "CLASS"},
    "--transfer-from": {"nargs": "+", "metavar": "CLASS"},
    "--transfer-kimg": {"type": float},
}

# the command's own flags that set a config key: dest → (section, key)
CONFIG_FLAGS = {
    "model": ("classify", "model"),
    **{flag[2:].replace("-", "_"): where for flag, where in MOVED.items()},
    **{key: ("compare", key) for key in ("classes", "fractions", "arms", "seeds")},
}


def run(args: argparse.Namespace) -> int:
    """Validate everything first, run the unfinished cells, then write the tables and the report."""
    from pipelines.data.prepare import prepare
    from pipelines.experiment.paper import shows_paper
    from pipelines.experiment.plan import Sweep, cell_lines
    from pipelines.experiment.predictions import collect
    from pipelines.experiment.report import write_report
    from pipelines.experiment.stats import auc_table, qwk_table
    from pipelines.experiment.sweep import (
        collect_cells,
        execute,
        gan_quality,
        record_notes,
        validate,
    )
    from pipelines.experiment.verdict import verdict

    studied = lambda c: list(c["compare"]["classes"])  # noqa: E731
    cfg, spec = resolve_config(args, CONFIG_FLAGS, studied, ("gan", "resolution"))
    prepared = prepare(spec, progress=args.progress)
    if not args.list_cells:  # the listing is only the plan, for scripts to read
        print_data_notes(prepared)
    cmp = cfg["compare"]
    sweep = Sweep(
        list(cmp["classes"]),
        list(cmp["fractions"]),
        list(cmp["arms"]),
        list(cmp["seeds"]),
        args.runs,
        cfg["classify"]["model"],
        args.name,
        args.progress,
        bool(cmp["conditional_gan"]),
        redo=args.redo,
        results=args.results,
        condition_on=tuple(cmp["condition_on"]),
        transfer_from=tuple(dict.fromkeys(cmp["transfer_from"])),
    )
    dataset = prepared.dataset_name
    validate(sweep, prepared, cfg)
    if args.list_cells:
        print("\n".join(cell_lines(sweep, dataset)))
        return 0
    if args.cell is not None:
        return run_one(sweep, prepared, cfg, dataset, args.cell)
    n_cells = len(sweep.classes) * len(sweep.fractions) * len(sweep.arms) * len(sweep.seeds)
    print(
        f"{dataset}: {n_cells} cells ({len(sweep.classes)} classes × {len(sweep.fractions)} fractions × "
        f"{len(sweep.arms)} arms × {len(sweep.seeds)} seeds)",
        flush=True,
    )
    records = sweep.records_dir(dataset)
    if args.collect and not any(records.glob("*.json")):
        raise RareganError(
            f"no cell records in {records}; run the sweep's cells first (compare without "
            "--collect, or --cell K), or give the --results folder that holds them"
        )
    cells = (
        collect_cells(sweep, dataset, prepared, cfg)
        if args.collect
        else execute(sweep, prepared, cfg, dataset)
    )
    source = "phantoms" if dataset == "phantoms" else prepared.records.source
    predictions = collect(cells)  # every finished cell's test predictions, read once
    table = auc_table(predictions, n_boot=cmp["n_boot"], seed=0, paper=shows_paper(source))
    fid, images = gan_quality(sweep, dataset)
    out = sweep.results_dir(dataset)
    context = {
        "title": f"raregan: GAN augmentation of rare classes — {dataset}",
        "dataset": dataset,
        "source": source,
        "commands": [sweep_command(args.command_line)],
        "config": cfg,
        "images": images,
        "notes": [
            f"Split seed {spec.seed}; {len(prepared.split('test'))} test images of "
            f"{prepared.split('test').frame['patient'].nunique()} patients; images {spec.size} px.",
            *record_notes(sweep, dataset),
        ],
    }
    if len(fid):
        context["fid_kid"] = fid
    if prepared.records.task == "ordinal":  # grades: kappa beside the one-vs-rest AUC
        context["qwk"] = qwk_table(predictions, n_boot=cmp["n_boot"], seed=0)
    with file_lock(sweep.lock(dataset, "results")):  # one writer of the tables at a time
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "cells.csv", cells.to_csv(index=False))
        paths = write_report(out, table, cells, context)
    for cls in sweep.classes:
        print(verdict(table, cls, fid))
    counts = cells["status"].value_counts().to_dict()
    print(f"cells: {counts}; report: {paths['report_html']}")
    return 0 if counts.get("failed", 0) == 0 else 1


def run_one(sweep: Sweep, prepared, cfg: dict, dataset: str, which: str) -> int:
    """`--cell K`: run that one cell and write its record (no tables); 0 done, 1 failed."""
    from pipelines.experiment.cell_records import record_checker
    from pipelines.experiment.execute import run_cell
    from pipelines.experiment.plan import cell_plan, find_cell

    cells = cell_plan(sweep, dataset)
    k = find_cell(cells, which)
    check = record_checker(sweep, prepared, cfg, dataset)
    status = run_cell(sweep, prepared, cfg, dataset, cells, k, check)
    where = cells[k].run / "ERROR" if status == "failed" else sweep.records_dir(dataset)
    print(f"cell {k} ({cells[k].id}): {status}; see {where}", flush=True)
    return 0 if status == "done" else 1

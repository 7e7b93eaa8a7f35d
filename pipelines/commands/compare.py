"""`raregan compare`: the experiment — classes × fractions × arms × seeds, then tables and a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pipelines.commands.common import (
    add_data_arguments,
    config_overrides,
    print_data_notes,
    spec_from_args,
)
from pipelines.config import load_config
from pipelines.data.prepare import prepare
from pipelines.experiment.paper import shows_paper
from pipelines.experiment.report import write_report
from pipelines.experiment.sweep import Sweep, collect_cells, execute, gan_quality, validate
from pipelines.experiment.tables import auc_table, verdict

NAME = "compare"
HELP = "run the experiment (arms × fractions × seeds, a GAN per class, fraction and seed) and write tables, plots and a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus the sweep's axes."""
    add_data_arguments(parser, "classes", "model", "epochs", "kimg", "config", "runs", "redo")
    parser.add_argument(
        "--fractions", nargs="*", type=float, help="train fractions in %% (default: config)"
    )
    parser.add_argument(
        "--arms",
        nargs="*",
        help="arms among none, standard, filters, gan_nofilter, gan, gan_standard "
        "(default: the config's compare.arms)",
    )
    parser.add_argument("--seeds", nargs="*", type=int, help="classifier seeds (default: config)")
    parser.add_argument(
        "--synth-ratio", type=float, help="synthetic images per real positive (default: config, 3)"
    )
    parser.add_argument(
        "--label-rows",
        choices=["gan", "copy_real"],
        help="synthetic label rows: the GAN's class only, others unknown (gan, default), or a real "
        "positive's whole row (copy_real, as the paper)",
    )
    parser.add_argument(
        "--conditional-gan",
        action="store_true",
        default=None,
        help="one label-conditional GAN per fraction for all rare classes (default: one GAN per class)",
    )
    parser.add_argument(
        "--name", default="sweep", help="name of the sweep (run folders and report)"
    )
    parser.add_argument(
        "--collect", action="store_true", help="only collect finished cells into tables and report"
    )
    parser.add_argument("--progress", action="store_true", help="progress bars for each training")


def resolved_config(args: argparse.Namespace) -> dict:
    """The preset with the command line's overrides."""
    over = config_overrides(
        args,
        {
            "model": ("classify", "model"),
            "epochs": ("classify", "epochs"),
            "kimg": ("gan", "kimg_per_phase"),
            "synth_ratio": ("compare", "synth_ratio"),
            "conditional_gan": ("compare", "conditional_gan"),
            "label_rows": ("compare", "label_rows"),
            **{key: ("compare", key) for key in ("classes", "fractions", "arms", "seeds")},
        },
    )
    return load_config(args.config, over)


def run(args: argparse.Namespace) -> int:
    """Validate everything first, run the unfinished cells, then write the tables and the report."""
    cfg = resolved_config(args)
    if not args.size:
        args.size = cfg["gan"]["resolution"]
    spec = spec_from_args(args, cfg, studied=list(cfg["compare"]["classes"]))
    cfg["data"].update(size=spec.size, seed=spec.seed)
    prepared = prepare(spec, progress=args.progress)
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
    )
    dataset = prepared.dataset_name
    validate(sweep, prepared, cfg)
    n_cells = len(sweep.classes) * len(sweep.fractions) * len(sweep.arms) * len(sweep.seeds)
    print(
        f"{dataset}: {n_cells} cells ({len(sweep.classes)} classes × {len(sweep.fractions)} fractions × "
        f"{len(sweep.arms)} arms × {len(sweep.seeds)} seeds)",
        flush=True,
    )
    cells = (
        collect_cells(sweep, dataset, prepared, cfg)
        if args.collect
        else execute(sweep, prepared, cfg, dataset)
    )
    source = "phantoms" if dataset == "phantoms" else prepared.records.source
    table = auc_table(cells, n_boot=cmp["n_boot"], seed=0, paper=shows_paper(source))
    fid, images = gan_quality(sweep, dataset)
    out = sweep.out_dir(dataset)
    Path(out).mkdir(parents=True, exist_ok=True)
    cells.to_csv(out / "cells.csv", index=False)
    context = {
        "title": f"raregan: GAN augmentation of rare classes — {dataset}",
        "dataset": dataset,
        "source": "phantoms" if dataset == "phantoms" else prepared.records.source,
        "commands": ["raregan " + " ".join(shlex.quote(a) for a in sys.argv[1:])],
        "config": cfg,
        "images": [(p, c) for p, c in images if Path(p).is_file()],
        "notes": [
            f"Split seed {spec.seed}; {len(prepared.split('test'))} test images of "
            f"{prepared.split('test').frame['patient'].nunique()} patients; images {spec.size} px."
        ],
    }
    if len(fid):
        context["fid_kid"] = fid
    paths = write_report(out, table, cells, context)
    for cls in sweep.classes:
        print(verdict(table, cls))
    counts = cells["status"].value_counts().to_dict()
    print(f"cells: {counts}; report: {paths['report_html']}")
    return 0 if counts.get("failed", 0) == 0 else 1

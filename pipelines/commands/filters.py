"""`raregan filters`: expand a class's training images with the filter bank; write them and a preview."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipelines.commands.common import add_data_arguments, print_data_notes
from pipelines.commands.settings import resolve_config

NAME = "filters"
HELP = "pre-augment a class's train images with the filter bank (blur, unsharp, minimum); write them and a preview grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options, the class, the fraction and the output folder."""
    parser.add_argument(
        "--class",
        dest="cls",
        required=True,
        help="the (rare) class whose train positives are expanded",
    )
    add_data_arguments(
        parser, "fraction", "config", config={"help": "preset name or YAML path (filters section)"}
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new, empty, or a previous filters output (replaced only when complete)",
    )


def safe_name(text: str) -> str:
    """A file-name-safe version of an image id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-120:]


def run(args: argparse.Namespace) -> int:
    """Write out/images/<filter>/*.png, out/expanded.csv, out/preview.png and DONE."""
    import pandas as pd  # the data layer loads when the command runs, not for --help

    from pipelines.data.prefilter import expand
    from pipelines.data.prepare import prepare
    from pipelines.images import save_grid, save_png
    from pipelines.runs import mark_done, staged_dir, write_json

    cfg, spec = resolve_config(args)
    prepared = prepare(spec, progress=False)
    print_data_notes(prepared)
    rows = prepared.positives(args.cls, args.fraction, spec.seed)
    images = prepared.store.array[rows["row"].to_numpy()]
    expanded, which = expand(images, cfg)
    n = len(rows)
    with staged_dir(args.out, "filters") as tmp:
        table = []
        for k, (img, flt) in enumerate(zip(expanded, which, strict=True)):
            src = rows.iloc[k % n]
            rel = Path("images") / flt / f"{safe_name(src['image_id'])}.png"
            (tmp / rel.parent).mkdir(parents=True, exist_ok=True)
            save_png(tmp / rel, img)
            table.append(
                {
                    "file": str(rel),
                    "filter": flt,
                    "source_path": src["path"],
                    "patient": src["patient"],
                }
            )
        pd.DataFrame(table).to_csv(tmp / "expanded.csv", index=False)
        filters_used = list(dict.fromkeys(which))
        show = min(n, 6)
        grid = [[expanded[i + n * f] for f in range(len(filters_used))] for i in range(show)]
        save_grid(
            tmp / "preview.png",
            grid,
            col_titles=filters_used,
            title=f"{args.cls}: {n} train positives × {len(filters_used)} ({prepared.records.source})",
        )
        write_json(
            tmp / "summary.json",
            {
                "class": args.cls,
                "fraction": args.fraction,
                "positives": n,
                "images": len(expanded),
                "filters": filters_used,
                "data": str(args.data),
            },
        )
        mark_done(tmp)
    print(
        f"wrote {len(expanded)} images ({n} {args.cls} train positives × {len(filters_used)}) to {args.out}"
    )
    return 0

"""A sweep cell's record: what it says, writing it from a finished run, checking it is current.

`cell_settings` is what a record says its cell is (sweep, dataset, axes, model, config);
`record_cell` writes the record of a finished cell from its run folder (a classifier's metrics and
test predictions, a GAN's summary, gan-eval report and image grids); `record_checker` stops a sweep
when a record was made by other settings than the sweep's now. The record files themselves are
read and written by `records.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import pandas as pd

from pipelines.classifier.arms import train_rows
from pipelines.classifier.run import classifier_fingerprint
from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.experiment.plan import Cell, Sweep, source_id, unit_source, variant_config
from pipelines.experiment.records import (
    PREDICTIONS,
    predictions_bytes,
    read_json,
    read_record,
    write_record,
)
from pipelines.gan.run import gan_fingerprint
from pipelines.runs import FINGERPRINT, StaleRunError, is_done, refuse_stale

GRIDS = {  # a GAN record's image side files (first seed only): suffix → caption after "what: "
    "-real_vs_synthetic.png": "real train positives (top) vs GAN samples",
    "-closest_pairs.png": "synthetic images and their nearest real training image",
}


def cell_settings(sweep: Sweep, cfg: dict, dataset: str, cell: Cell) -> dict:
    """What a record says its cell is: sweep, dataset, axes, model and the config it ran with."""
    out = {"sweep": sweep.name, "dataset": dataset, "fraction": cell.fraction, "seed": cell.seed}
    if cell.kind in ("gan", "source"):
        c = variant_config(cfg, cell.variant, unit_source(sweep, dataset, cell))
        config = {"gan": {**c["gan"], "seed": cell.seed}, "filters": c["filters"]}
        synth = {k: cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        synth = {"synth": synth} if cell.kind == "gan" else {}  # a source synthesizes nothing
        return (
            out
            | {"classes": list(cell.unit), "variant": cell.variant, **synth}
            | {"config": config | {"data": cfg["data"]}}
        )
    config = {"classify": {**cfg["classify"], "seed": cell.seed}, "compare": cfg["compare"]}
    return (
        out
        | {"classes": sweep.classes, "arm": cell.arm, "model": sweep.model}
        | {"config": config | {"data": cfg["data"], "filters": cfg["filters"]}}
    )


def record_cell(
    sweep: Sweep, cfg: dict, dataset: str, cells: list[Cell], cell: Cell, synth: Path | None = None
) -> Path:
    """Write the record of a finished cell from its run folder: settings, the run's fingerprint,
    and a classifier's metrics and test predictions or a GAN's summary, gan-eval report and grids."""
    run = cell.run
    if not is_done(run):
        raise RareganError(f"{run} has no DONE marker; its cell did not finish")
    record = {
        "id": cell.id,
        "kind": cell.kind,
        "settings": cell_settings(sweep, cfg, dataset, cell),
        "needs": [cells[j].id for j in cell.needs],
        "fingerprint": read_json(run / FINGERPRINT),
    }
    if cell.kind == "classify":
        record["metrics"] = read_json(run / "metrics.json")
        files = {PREDICTIONS: predictions_bytes(run)}
    elif cell.kind == "source":  # a GAN the sweep's GANs start from: nothing synthesized
        record["summary"] = read_json(run / "summary.json")
        files = {}
    else:
        record |= {"synthetic": synth.name, "summary": read_json(run / "summary.json")}
        record["eval"] = read_json(run / "eval" / "eval.json")
        first = cell.seed == sweep.seeds[0]  # the report shows the first seed's grids
        grids = {k: run / "eval" / k[1:] for k in GRIDS} if first else {}
        files = {k: path.read_bytes() for k, path in grids.items() if path.is_file()}
    return write_record(sweep.records_dir(dataset), record, files)


def gan_rows(prepared: Prepared, unit: tuple[str, ...], fraction: float, seed: int) -> pd.DataFrame:
    """The train positives a GAN of `unit` learns from, chosen as `training_images` does (no pixels)."""
    parts = [prepared.positives(cls, fraction, seed) for cls in unit]
    return pd.concat(parts).drop_duplicates("row").sort_values("row")


def record_checker(
    sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str
) -> Callable[[Cell, dict, Path], None]:
    """A check that raises StaleRunError when a cell's record was made by other settings than this
    sweep's now (a classifier's synthetic-set ids are not compared: their GANs' records are; nor
    the precision a machine resolved gan.precision `auto` to). A GAN unit that fine-tunes a transfer
    source names it by the fingerprint its source's record holds, so records alone are checked."""
    seed = cfg["data"]["seed"]
    rows = cache(lambda f: train_rows(prepared, f, seed, sweep.classes))
    positives = cache(lambda unit, f: gan_rows(prepared, unit, f, seed))

    def check(cell: Cell, record: dict, path: Path) -> None:
        before = dict(record["fingerprint"].get("settings", {}))
        if cell.kind == "classify":
            c = {**cfg, "classify": {**cfg["classify"], "seed": cell.seed}}
            args = (rows(cell.fraction), cell.fraction, cell.arm, sweep.model, sweep.classes, [])
            now = classifier_fingerprint(prepared, c, *args)["settings"]
            refuse_stale(path, before, now, ignore=("synth", "pretrained", "freeze"))
            return
        vcfg = variant_config(cfg, cell.variant, unit_source(sweep, dataset, cell))
        g = {**vcfg, "gan": {**vcfg["gan"], "seed": cell.seed}}
        source = None
        if vcfg["gan"]["init_from"] is not None and sweep.transfer_from:
            name = source_id(sweep, cell.fraction, cell.seed)
            if (made := read_record(sweep.records_dir(dataset), name)) is None:
                raise StaleRunError(
                    f"{path}: the record of the source GAN it fine-tuned ({name}) is not here; run "
                    f"--cell {name}, or delete {path} to train this GAN again"
                )
            source = made["fingerprint"]["id"]
        # gan.precision `auto` is the machine's (bf16 where native): a record from a bf16 CPU or GPU
        # stands on an fp32 machine and the other way round, and says which one made it. An explicit
        # 32 or bf16 is a setting like any other: a GAN of the other precision is stale.
        setting = vcfg["gan"]["precision"]
        precision = "bf16" if setting == "bf16" else "32"
        now = gan_fingerprint(
            prepared, g, list(cell.unit), cell.fraction, positives(cell.unit, cell.fraction),
            precision, source,
        )  # fmt: skip
        synth_now = {f"synth.{k}": cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        synth_now = synth_now if cell.kind == "gan" else {}
        synth_then = {f"synth.{k}": v for k, v in record["settings"].get("synth", {}).items()}
        ignore = ("gan.precision",) if setting == "auto" else ()
        refuse_stale(path, before | synth_then, now["settings"] | synth_now, ignore=ignore)

    return check

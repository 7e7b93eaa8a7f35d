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
from pipelines.experiment.plan import Cell, Sweep, cell_config, source_id, unit_source
from pipelines.experiment.records import (
    PREDICTIONS,
    predictions_bytes,
    read_json,
    read_record,
    record_digest,
    write_record,
)
from pipelines.fingerprints import FINGERPRINT, StaleRunError, refuse_stale
from pipelines.generators import fingerprint as generator_fingerprint
from pipelines.generators import section
from pipelines.runs import is_done

GRIDS = {  # a GAN record's image side files (first seed only): suffix → caption after "what: "
    "-real_vs_synthetic.png": "real train positives (top) vs GAN samples",
    "-closest_pairs.png": "synthetic images and their nearest real training image",
}


def cell_settings(sweep: Sweep, cfg: dict, dataset: str, cell: Cell) -> dict:
    """What a record says its cell is: sweep, dataset, axes, model and the config it ran with."""
    out = {"sweep": sweep.name, "dataset": dataset, "fraction": cell.fraction, "seed": cell.seed}
    c = cell_config(cfg, cell.kind, cell.seed, cell.variant, unit_source(sweep, dataset, cell))
    if cell.kind in ("gan", "source"):
        name = section(c)  # the generator kind's section (a PGGAN's records hold only "gan")
        kind = {} if name == "gan" else {"generator": c["generator"]}
        config = {**kind, name: c[name], "filters": c["filters"]}
        synth = {k: cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        synth = {"synth": synth} if cell.kind == "gan" else {}  # a source synthesizes nothing
        return (
            out
            | {"classes": list(cell.unit), "variant": cell.variant, **synth}
            | {"config": config | {"data": cfg["data"]}}
        )
    config = {"classify": c["classify"], "compare": c["compare"]}
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
        # the GAN records its synthetic images came from, by content: a GAN trained again (--redo,
        # its record replaced) makes this classifier stale
        folder = sweep.records_dir(dataset)
        record["made_from"] = {
            cells[j].id: record_digest(read_record(folder, cells[j].id) or {}) for j in cell.needs
        }
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


def check_made_from(record: dict, path: Path, digest_of: Callable[[str], str | None]) -> None:
    """A StaleRunError when a GAN record a classifier's synthetic images came from is gone
    (`digest_of` gives None) or was replaced since (records made before `made_from` existed are
    not checked)."""
    for cell_id, digest in record.get("made_from", {}).items():
        now = digest_of(cell_id)
        if now != digest:
            what = "is gone" if now is None else "was trained again since"
            raise StaleRunError(
                f"{path}: the GAN record its synthetic images came from ({cell_id}) {what}; "
                "pass --redo to train this classifier on the GAN's images now"
            )


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
    folder = sweep.records_dir(dataset)
    digest_of = cache(lambda i: None if (r := read_record(folder, i)) is None else record_digest(r))

    def check(cell: Cell, record: dict, path: Path) -> None:
        before = dict(record["fingerprint"].get("settings", {}))
        c = cell_config(cfg, cell.kind, cell.seed, cell.variant, unit_source(sweep, dataset, cell))
        if cell.kind == "classify":
            args = (rows(cell.fraction), cell.fraction, cell.arm, sweep.model, sweep.classes, [])
            now = classifier_fingerprint(prepared, c, *args)["settings"]
            ignore = ("synth", "pretrained", "freeze", "start_from")  # made_from checks those
            refuse_stale(path, before, now, ignore=ignore)
            check_made_from(record, path, digest_of)
            return
        source = None
        if c["gan"]["init_from"] is not None and sweep.transfer_from:
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
        setting = c[section(c)]["precision"]
        precision = "bf16" if setting == "bf16" else "32"
        now = generator_fingerprint(
            prepared, c, list(cell.unit), cell.fraction, positives(cell.unit, cell.fraction),
            precision, source,
        )  # fmt: skip
        synth_now = {f"synth.{k}": cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        synth_now = synth_now if cell.kind == "gan" else {}
        synth_then = {f"synth.{k}": v for k, v in record["settings"].get("synth", {}).items()}
        ignore = (f"{section(c)}.precision",) if setting == "auto" else ()
        refuse_stale(path, before | synth_then, now["settings"] | synth_now, ignore=ignore)

    return check

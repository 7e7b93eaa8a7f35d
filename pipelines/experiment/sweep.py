"""The experiment: rare classes × fractions × arms × seeds as resumable cells, then tables and a report.

Cells: the `none` and `standard` classifiers of a (fraction, seed) do not depend on the class, so
one run serves every class (its score for that class is read). The GAN is part of the treatment:
each (rare class, fraction, seed) trains its own GAN (the seed drives its init, latents and
synthesis), on that fraction's train positives (the classifier's own fraction mask), and the `gan`
arm of a (fraction, seed) trains one classifier on real rows plus the synthetic rows of that seed's
GANs; with `conditional` one label-conditional GAN per fraction and seed learns all rare classes.

The work is a plan of cells in a stable order (index K): every GAN unit, then every classifier
(arm, fraction, seed), which needs its fraction and seed's GAN units when its arm uses synthetic
images. `run_cell` runs one cell, under a lock so that two processes never run the same one, and
leaves its record (`records.py`) in the sweep's results folder when it is done; the full sweep is
that, cell by cell. Every run is a folder with DONE when finished and ERROR when it failed;
re-running skips cells whose record is there and resumes unfinished runs from their last
checkpoint. Tables are collected from the records alone.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import pandas as pd

from pipelines.classifier.arms import ARMS, train_rows
from pipelines.classifier.run import classifier_fingerprint, train_classifier
from pipelines.data.prepare import Prepared
from pipelines.data.splits import check_fractions
from pipelines.errors import RareganError
from pipelines.experiment.records import (
    PREDICTIONS,
    predictions_bytes,
    read_json,
    read_record,
    record_path,
    remove_record,
    side_file,
    write_record,
)
from pipelines.gan.distances import space_label
from pipelines.gan.eval_run import evaluate_gan_run
from pipelines.gan.run import CKPT, class_tag, gan_fingerprint, train_gan, training_images
from pipelines.gan.synth import synthesize
from pipelines.runs import (
    FINGERPRINT,
    RunOptions,
    StaleRunError,
    atomic_write_text,
    file_lock,
    is_done,
    refuse_stale,
    run_path,
)

ERROR = "ERROR"
# the GAN variant each synthetic-data arm trains on: after the filter bank, or without it
GAN_VARIANT = {"gan": "filters", "gan_standard": "filters", "gan_nofilter": "nofilter"}


def variant_config(cfg: dict, variant: str) -> dict:
    """The config of a GAN variant: "nofilter" empties the filter bank (originals only)."""
    if variant == "nofilter":
        return {**cfg, "filters": {**cfg["filters"], "names": []}}
    return cfg


@dataclass
class Sweep:
    """What to run: classes, fractions (%), arms, classifier seeds, and where."""

    classes: list[str]
    fractions: list[float]
    arms: list[str]
    seeds: list[int]
    runs: Path
    model: str
    name: str = "sweep"
    progress: bool = False
    conditional: bool = False
    redo: bool = False
    log: list[str] = field(default_factory=list)
    results: Path | None = None  # where cell records, tables and report go (default: out_dir)

    def gan_units(self) -> list[list[str]]:
        """The class sets that get a GAN: each class alone, or all together (conditional)."""
        if self.conditional and len(self.classes) > 1:
            return [list(self.classes)]
        return [[cls] for cls in self.classes]

    def classify_dir(self, dataset: str, arm: str, fraction: float, seed: int) -> Path:
        """Run folder of one classifier."""
        return run_path(
            self.runs, dataset, "classify", f"{self.name}-{self.model}-{arm}-f{fraction:g}-s{seed}"
        )

    def gan_variants(self) -> list[str]:
        """The GAN variants the arms need: "filters" (after the filter bank) and/or "nofilter"."""
        need = {GAN_VARIANT[a] for a in self.arms if a in GAN_VARIANT}
        return [v for v in ("filters", "nofilter") if v in need]

    def gan_dir(
        self, dataset: str, classes: list[str], fraction: float, seed: int, variant: str = "filters"
    ) -> Path:
        """Run folder of a GAN: class set, fraction, seed (the classifier's) and filter variant."""
        tag = f"{self.name}-{class_tag(classes)}-f{fraction:g}-seed{seed}"
        return run_path(
            self.runs, dataset, "gan", tag + ("-nofilter" if variant == "nofilter" else "")
        )

    def out_dir(self, dataset: str) -> Path:
        """The sweep's folder among the runs (its locks; its results unless `results` is given)."""
        return run_path(self.runs, dataset, "compare", self.name)

    def results_dir(self, dataset: str) -> Path:
        """Where the cell records (`cells/`), the tables and the report go."""
        return Path(self.results) if self.results else self.out_dir(dataset)

    def records_dir(self, dataset: str) -> Path:
        """The folder of the cell records."""
        return self.results_dir(dataset) / "cells"

    def lock(self, dataset: str, name: str) -> Path:
        """A lock file of this sweep, beside its runs (never among the results a user commits)."""
        return self.out_dir(dataset) / "locks" / f"{name}.lock"


def validate(sweep: Sweep, prepared: Prepared, cfg: dict) -> None:
    """Refuse bad classes, fractions, arms or seeds before any training starts."""
    sweep.fractions = check_fractions(sweep.fractions)
    bad = [a for a in sweep.arms if a not in ARMS]
    if bad:
        raise RareganError(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
    if not sweep.classes:
        raise RareganError("give at least one rare class (--classes)")
    prepared.require_test_positives(sweep.classes)
    for variant in sweep.gan_variants():  # the smallest fraction must leave each GAN enough images
        for unit in sweep.gan_units():
            training_images(prepared, unit, sweep.fractions[0], variant_config(cfg, variant))


@dataclass(frozen=True)
class Cell:
    """One piece of a sweep's work: a GAN unit (class set, fraction, seed, filter variant) or a
    classifier (arm, fraction, seed); its run folder and the plan indices of the GANs it needs."""

    kind: str  # "gan" or "classify"
    id: str
    fraction: float
    seed: int
    run: Path
    arm: str = ""
    unit: tuple[str, ...] = ()
    variant: str = ""
    needs: tuple[int, ...] = ()


def classify_id(arm: str, fraction: float, seed: int) -> str:
    """The id (and record name) of a classifier cell."""
    return f"classify-{arm}-f{fraction:g}-s{seed}"


def cell_plan(sweep: Sweep, dataset: str) -> list[Cell]:
    """Every cell of the sweep in a stable order, K = position: all GAN units, then the classifiers."""
    gans = [
        Cell(
            "gan",
            f"gan-{class_tag(unit)}-f{f:g}-s{s}" + ("-nofilter" if v == "nofilter" else ""),
            f,
            s,
            sweep.gan_dir(dataset, unit, f, s, v),
            unit=tuple(unit),
            variant=v,
        )
        for f in sweep.fractions
        for v in sweep.gan_variants()
        for unit in sweep.gan_units()
        for s in sweep.seeds
    ]
    classifiers = [
        Cell(
            "classify",
            classify_id(arm, f, s),
            f,
            s,
            sweep.classify_dir(dataset, arm, f, s),
            arm=arm,
            needs=tuple(
                k
                for k, g in enumerate(gans)
                if (g.fraction, g.seed, g.variant) == (f, s, GAN_VARIANT.get(arm))
            ),
        )
        for f in sweep.fractions
        for s in sweep.seeds
        for arm in sweep.arms
    ]
    return gans + classifiers


def plan(sweep: Sweep, dataset: str) -> pd.DataFrame:
    """One row per (class, fraction, arm, seed) with its classifier cell's id and run folder."""
    rows = [
        {
            "class": cls,
            "fraction": f,
            "arm": arm,
            "seed": s,
            "cell": classify_id(arm, f, s),
            "run": str(sweep.classify_dir(dataset, arm, f, s)),
        }
        for f in sweep.fractions
        for cls in sweep.classes
        for arm in sweep.arms
        for s in sweep.seeds
    ]
    return pd.DataFrame(rows)


def status_of(cell: Cell, record: dict | None) -> tuple[str, str]:
    """done (its record is there) / failed (with its error, read from the run folder) / pending."""
    if record is not None:
        return "done", ""
    if (cell.run / ERROR).is_file():
        return "failed", (cell.run / ERROR).read_text().strip().splitlines()[0]
    return "pending", ""


def attempt(run: Path, fn):
    """Run one step; on failure write ERROR (first line: the reason) and go on.

    Returns what `fn` returned, or None when it failed. A finished run is handed to `fn` too,
    which reuses it only when its fingerprint matches; a run made by other settings stops the
    sweep (StaleRunError) rather than mixing into its table.
    """
    run = Path(run)
    (run / ERROR).unlink(missing_ok=True)
    try:
        return fn()
    except (KeyboardInterrupt, StaleRunError):
        raise
    except Exception as err:  # a failed cell is recorded and reported, never dropped
        run.mkdir(parents=True, exist_ok=True)
        reason = str(err) if isinstance(err, RareganError) else f"{type(err).__name__}: {err}"
        atomic_write_text(run / ERROR, reason.replace("\n", " ") + "\n\n" + traceback.format_exc())
        return None


def gan_unit(
    sweep: Sweep,
    prepared: Prepared,
    cfg: dict,
    unit: list[str],
    fraction: float,
    seed: int,
    gdir: Path,
) -> Path:
    """One GAN of the sweep (its seed drives init, latents and synthesis), its synthetic set and
    its evaluation; returns the synthetic set. Any failure here fails only this unit's cells."""
    g = {**cfg, "gan": {**cfg["gan"], "seed": seed}}  # variant_config applied by the caller
    opts = RunOptions(resume=(gdir / CKPT).exists(), redo=sweep.redo, progress=sweep.progress)
    train_gan(prepared, unit, fraction, g, gdir, opts)
    c = cfg["compare"]
    synth = synthesize(
        gdir, ratio=c["synth_ratio"], seed=seed, label_rows=c["label_rows"], redo=sweep.redo
    )
    if not (gdir / "eval" / "eval.json").is_file():
        evaluate_gan_run(gdir, synth, seed=seed, cache=prepared.store.data_path.parent)
    return synth


GRIDS = {  # a GAN record's image side files (first seed only): suffix → caption after "what: "
    "-real_vs_synthetic.png": "real train positives (top) vs GAN samples",
    "-closest_pairs.png": "synthetic images and their nearest real training image",
}


def cell_settings(sweep: Sweep, cfg: dict, dataset: str, cell: Cell) -> dict:
    """What a record says its cell is: sweep, dataset, axes, model and the config it ran with."""
    out = {"sweep": sweep.name, "dataset": dataset, "fraction": cell.fraction, "seed": cell.seed}
    if cell.kind == "gan":
        c = variant_config(cfg, cell.variant)
        config = {"gan": {**c["gan"], "seed": cell.seed}, "filters": c["filters"]}
        synth = {k: cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        return (
            out
            | {"classes": list(cell.unit), "variant": cell.variant, "synth": synth}
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
    sweep: Sweep, prepared: Prepared, cfg: dict
) -> Callable[[Cell, dict, Path], None]:
    """A check that raises StaleRunError when a cell's record was made by other settings than this
    sweep's now (a classifier's synthetic-set ids are not compared: their GANs' records are)."""
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
        vcfg = variant_config(cfg, cell.variant)
        g = {**vcfg, "gan": {**vcfg["gan"], "seed": cell.seed}}
        now = gan_fingerprint(
            prepared, g, list(cell.unit), cell.fraction, positives(cell.unit, cell.fraction)
        )
        synth_now = {f"synth.{k}": cfg["compare"][k] for k in ("synth_ratio", "label_rows")}
        synth_then = {f"synth.{k}": v for k, v in record["settings"].get("synth", {}).items()}
        refuse_stale(path, before | synth_then, now["settings"] | synth_now)

    return check


class DependencyError(RareganError):
    """A classifier cell whose GAN units are not done; `failed` when one of them failed."""

    def __init__(self, message: str, failed: bool) -> None:
        super().__init__(message)
        self.failed = failed


class CellBusy(RareganError):
    """A cell that another process is running now."""


def needed_synth(sweep: Sweep, dataset: str, cells: list[Cell], k: int, j: int, check) -> Path:
    """The synthetic set of GAN unit `j` that cell `k` needs; DependencyError when not done here."""
    gan, folder = cells[j], sweep.records_dir(dataset)
    record = read_record(folder, gan.id)
    head = f"cell {k} ({cells[k].id}) needs GAN unit {j} ({gan.id})"
    if record is None:
        failed = (gan.run / ERROR).is_file()
        what = "failed (see its run folder's ERROR)" if failed else "is not done"
        raise DependencyError(f"{head}, which {what}; run --cell {j} first", failed)
    check(gan, record, record_path(folder, gan.id))
    synth = gan.run / record["synthetic"]
    if not (is_done(gan.run) and is_done(synth)):
        raise DependencyError(
            f"{head}: its record is here but its synthetic images {synth} are not; copy its run "
            f"folder here, or delete {record_path(folder, gan.id)} and run --cell {j} again",
            failed=True,
        )
    return synth


def run_cell(
    sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str, cells: list[Cell], k: int, check
) -> str:
    """Run cell `k` and leave its record: "done" (also when its record, made by these settings, was
    there) or "failed" (its ERROR written). Refuses a cell whose GANs are not done
    (DependencyError) or that another process is running (CellBusy)."""
    cell, folder = cells[k], sweep.records_dir(dataset)
    with file_lock(sweep.lock(dataset, cell.id), wait=False) as mine:
        if not mine:
            raise CellBusy(f"cell {k} ({cell.id}) is being run by another process")
        record = read_record(folder, cell.id)
        if record is not None:
            try:
                check(cell, record, record_path(folder, cell.id))
                return "done"
            except StaleRunError:
                if not sweep.redo:
                    raise
                remove_record(folder, cell.id)
        if cell.kind == "gan":
            vcfg = variant_config(cfg, cell.variant)
            args = (sweep, prepared, vcfg, list(cell.unit), cell.fraction, cell.seed, cell.run)

            def step() -> Path:
                return record_cell(sweep, cfg, dataset, cells, cell, gan_unit(*args))

        else:
            synth = [needed_synth(sweep, dataset, cells, k, j, check) for j in cell.needs]
            step = partial(classify_cell, sweep, prepared, cfg, dataset, cells, cell, synth)
        return "failed" if attempt(cell.run, step) is None else "done"


def classify_cell(
    sweep: Sweep,
    prepared: Prepared,
    cfg: dict,
    dataset: str,
    cells: list[Cell],
    cell: Cell,
    synth: list[Path],
) -> Path:
    """Train (or reuse, or resume) one classifier of the sweep and write its record."""
    c = {**cfg, "classify": {**cfg["classify"], "seed": cell.seed}}
    resume = (cell.run / "checkpoints" / "last.ckpt").exists()
    train_classifier(
        prepared,
        c,
        cell.run,
        fraction=cell.fraction,
        arm=cell.arm,
        classes=sweep.classes,
        synth=synth,
        opts=RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress),
    )
    return record_cell(sweep, cfg, dataset, cells, cell)


def execute(sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str) -> pd.DataFrame:
    """Run every cell without a record, each fraction and seed's GANs before its classifiers, then
    the cells table. A cell another process is running stays pending here."""
    cells = cell_plan(sweep, dataset)
    check = record_checker(sweep, prepared, cfg)
    for k in sorted(range(len(cells)), key=lambda k: (cells[k].fraction, cells[k].seed)):
        try:
            run_cell(sweep, prepared, cfg, dataset, cells, k, check)
        except CellBusy as err:
            print(f"{err}; left to it", flush=True)
        except DependencyError as err:
            if err.failed:
                cells[k].run.mkdir(parents=True, exist_ok=True)
                atomic_write_text(cells[k].run / ERROR, f"{err}\n")
    return collect_cells(sweep, dataset, prepared, cfg)  # checked: others may have added records


def collect_cells(
    sweep: Sweep, dataset: str, prepared: Prepared | None = None, cfg: dict | None = None
) -> pd.DataFrame:
    """The cells table from the cell records alone (no run folder needed): each cell's status,
    error and predictions file. Given the data and config, a record made by other settings stops
    the collection (never a mixed table)."""
    folder = sweep.records_dir(dataset)
    check = record_checker(sweep, prepared, cfg) if prepared is not None and cfg else None
    state = {}
    for cell in cell_plan(sweep, dataset):
        record = read_record(folder, cell.id)
        if record is not None and check is not None:
            check(cell, record, record_path(folder, cell.id))
        if cell.kind == "classify":
            path = side_file(folder, record, PREDICTIONS) if record else None
            state[cell.id] = (*status_of(cell, record), str(path) if path else "")
    cells = plan(sweep, dataset)
    cells["status"], cells["error"], cells["predictions"] = zip(
        *(state[c] for c in cells["cell"]), strict=True
    )
    return cells


def cell_lines(sweep: Sweep, dataset: str) -> list[str]:
    """The plan for --list-cells: per cell its index K, status, id and the cells it needs."""
    cells, folder = cell_plan(sweep, dataset), sweep.records_dir(dataset)
    width = max(len(c.id) for c in cells)
    lines = [f"{'# K':>5}  {'status':<8} {'cell':<{width}}  needs"]
    for k, cell in enumerate(cells):
        status, error = status_of(cell, read_record(folder, cell.id))
        needs = ",".join(map(str, cell.needs)) or "-"
        lines.append(f"{k:>5}  {status:<8} {cell.id:<{width}}  {needs}")
        lines[-1] += f"  ({error})" if error else ""
    return lines


def find_cell(cells: list[Cell], which: str) -> int:
    """The index of a cell given as K or as its id; a user error naming the valid range."""
    ids = [c.id for c in cells]
    if which in ids:
        return ids.index(which)
    if which.isdigit() and int(which) < len(cells):
        return int(which)
    raise RareganError(
        f"no cell {which!r}: this sweep has cells 0 to {len(cells) - 1} (see --list-cells)"
    )


def held(rep: dict) -> dict:
    """A GAN report's figures against held-out real images beside their real-vs-real baselines
    (NaN where gan-eval skipped them, e.g. too few held-out images)."""
    c2st, base = rep.get("c2st") or {}, rep.get("c2st_real_baseline") or {}
    pr = rep.get("pr_real_baseline") or {}
    nan = float("nan")
    return {
        "c2st": c2st.get("auc", nan),
        "c2st_low": c2st.get("ci_low", nan),
        "c2st_high": c2st.get("ci_high", nan),
        "c2st_real": base.get("auc", nan),
        "precision": nan if rep.get("precision") is None else rep["precision"],
        "recall": nan if rep.get("recall") is None else rep["recall"],
        "precision_real": pr.get("precision", nan),
        "recall_real": pr.get("recall", nan),
        "near_copies": rep.get("memorization", {}).get("frac_near_copies", nan),
    }


def gan_quality(sweep: Sweep, dataset: str) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """FID/KID, C2ST and precision/recall (held-out, beside real-vs-real) of every GAN unit with a
    record, and the first seed's image grids, from the records."""
    folder = sweep.records_dir(dataset)
    rows, images = [], []
    for cell in cell_plan(sweep, dataset):
        record = read_record(folder, cell.id) if cell.kind == "gan" else None
        if record is None:
            continue
        rep = record["eval"]
        what = " (GAN without the filter bank)" if cell.variant == "nofilter" else ""
        cls = " + ".join(cell.unit) + what
        space = space_label(str(rep.get("feature_space", "random-conv")))
        row = {"class": cls, "fraction": cell.fraction, "seed": cell.seed}
        rows.append(
            row | {"fid": rep["fid"], "kid": rep["kid"], "feature_space": space} | held(rep)
        )
        if cell.seed != sweep.seeds[0]:
            continue
        for suffix, caption in GRIDS.items():
            path = side_file(folder, record, suffix)
            if path is not None:
                images.append((path, f"{cls}, {cell.fraction:g} %, seed {cell.seed}: {caption}"))
    return pd.DataFrame(rows), images

"""The plan of a sweep: what to run and the cells that make it up, in a stable order.

`Sweep` names the classes, fractions, arms and seeds and the run folders they map to; `cell_plan`
lists its cells by index K, each with the indices of the cells it needs: the classifiers (arm,
fraction, seed) of the arms without a GAN; every GAN unit (class set, fraction, seed, filter
variant), which needs its fraction and seed's `none` classifier (the feature space of its
evaluation) when the sweep has that arm; then the classifiers of the GAN arms, which need their GAN
units. Here too are a cell's status (done, failed or pending), the `--list-cells` listing, and
finding a cell by K or id; nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from pipelines.arms import GAN_VARIANT, START_FROM_ARM, VARIANT_KIND, variant_kind, variant_section
from pipelines.errors import RareganError
from pipelines.experiment.records import read_record
from pipelines.gan.run import class_tag
from pipelines.runs import run_path

ERROR = "ERROR"


def variant_config(cfg: dict, variant: str, source: Path | None = None) -> dict:
    """The config of a GAN variant: "nofilter" empties the filter bank (originals only); "source"
    (the abundant classes' GAN a sweep's GANs start from) has no filter bank, pools its classes
    without labels (so that one-class GANs can start from it) and starts from no GAN.
    With `source`, a GAN unit fine-tunes that source for compare.transfer_kimg (its final phase).
    A variant of another generator kind (VARIANT_KIND: "diffusion") trains that kind, after the
    filter bank; a PGGAN source is not its to fine-tune (its own is diffusion.init_from)."""
    # never the config's kind: each variant names its own
    cfg = {**cfg, "generator": {**cfg["generator"], "kind": variant_kind(variant)}}
    if variant in VARIANT_KIND:
        return cfg
    if variant in ("nofilter", "source"):
        cfg = {**cfg, "filters": {**cfg["filters"], "names": []}}
    if variant == "source":
        cfg = {**cfg, "gan": {**cfg["gan"], "init_from": None, "freeze_d": 0, "conditional": False}}
    if source is not None:
        kimg = cfg["compare"]["transfer_kimg"]
        cfg = {**cfg, "gan": {**cfg["gan"], "init_from": str(source), "final_kimg": kimg}}
    return cfg


def cell_config(
    cfg: dict, kind: str, seed: int, variant: str = "", source: Path | None = None
) -> dict:
    """The whole config a cell of the sweep trains with, and the one its record holds and is
    checked against (one function for both, so they cannot drift): the sweep's config with the
    cell's seed as the seed of what it trains; a GAN unit's or a source's in its variant
    (`variant_config`, fine-tuning `source` when given)."""
    if kind == "classify":
        return {**cfg, "classify": {**cfg["classify"], "seed": seed}}
    c = variant_config(cfg, variant, source)
    section = variant_section(variant)
    return {**c, section: {**c[section], "seed": seed}}


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
    condition_on: tuple[str, ...] = ()  # classes each GAN also learns, never synthesized
    transfer_from: tuple[
        str, ...
    ] = ()  # classes whose GAN (per fraction, seed) each GAN starts from

    def gan_units(self) -> list[list[str]]:
        """The class sets that get a GAN: each class alone, or all together (conditional); each
        with the `condition_on` classes after them (one label-conditional GAN per unit)."""
        if self.conditional and len(self.classes) > 1:
            return [[*self.classes, *self.condition_on]]
        return [[cls, *self.condition_on] for cls in self.classes]

    def studied(self, unit: list[str] | tuple[str, ...]) -> list[str]:
        """The classes of a GAN unit that the sweep studies (and synthesizes)."""
        return [c for c in unit if c in self.classes]

    def classify_dir(self, dataset: str, arm: str, fraction: float, seed: int) -> Path:
        """Run folder of one classifier."""
        return run_path(
            self.runs, dataset, "classify", f"{self.name}-{self.model}-{arm}-f{fraction:g}-s{seed}"
        )

    def gan_variants(self) -> list[str]:
        """The generator variants the arms need: "filters" (a PGGAN after the filter bank),
        "nofilter" (without it), "diffusion" (a diffusion model after the filter bank)."""
        need = {GAN_VARIANT[a] for a in self.arms if a in GAN_VARIANT}
        return [v for v in ("filters", "nofilter", "diffusion") if v in need]

    def gan_dir(
        self, dataset: str, classes: list[str], fraction: float, seed: int, variant: str = "filters"
    ) -> Path:
        """Run folder of a GAN: class set, fraction, seed (the classifier's) and filter variant
        (or "source": a transfer source)."""
        tag = f"{self.name}-{class_tag(classes)}-f{fraction:g}-seed{seed}"
        return run_path(
            self.runs, dataset, "gan", tag + ("" if variant == "filters" else f"-{variant}")
        )

    def source_dir(self, dataset: str, fraction: float, seed: int) -> Path:
        """Run folder of the transfer source (`transfer_from`'s GAN) of a fraction and seed."""
        return self.gan_dir(dataset, list(self.transfer_from), fraction, seed, "source")

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


@dataclass(frozen=True)
class Cell:
    """One piece of a sweep's work: a GAN unit (class set, fraction, seed, filter variant) or a
    classifier (arm, fraction, seed); its run folder and the plan indices of the cells it needs
    (a GAN unit: its `none` classifier and transfer source; a GAN arm's classifier: its GAN units)."""

    kind: str  # "gan", "source" (a GAN the sweep's GANs start from) or "classify"
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


def arm_group(arm: str) -> str:
    """When an arm's classifiers run: "plain" (no generator), "synthetic" (on a generator's
    images), "started" (from another arm's classifier: START_FROM_ARM)."""
    return "started" if arm in START_FROM_ARM else "synthetic" if arm in GAN_VARIANT else "plain"


def classifier_cells(sweep: Sweep, dataset: str, group: str) -> list[Cell]:
    """The classifier cells of one arm group (arm_group), by fraction, seed and arm; no needs yet."""
    return [
        Cell("classify", classify_id(a, f, s), f, s, sweep.classify_dir(dataset, a, f, s), arm=a)
        for f in sweep.fractions
        for s in sweep.seeds
        for a in sweep.arms
        if arm_group(a) == group
    ]


def source_id(sweep: Sweep, fraction: float, seed: int) -> str:
    """The id (and record name) of the transfer source cell of a fraction and seed."""
    return f"source-{class_tag(list(sweep.transfer_from))}-f{fraction:g}-s{seed}"


def source_cells(sweep: Sweep, dataset: str) -> list[Cell]:
    """With `transfer_from`: its GAN per fraction and seed (the sweep's GANs of that fraction and
    seed start from it); none otherwise, or when no arm needs a GAN."""
    if not sweep.transfer_from or not sweep.gan_variants():
        return []
    return [
        Cell(
            "source",
            source_id(sweep, f, s),
            f,
            s,
            sweep.source_dir(dataset, f, s),
            unit=tuple(sweep.transfer_from),
            variant="source",
        )
        for f in sweep.fractions
        for s in sweep.seeds
    ]


def unit_source(sweep: Sweep, dataset: str, cell: Cell) -> Path | None:
    """The run folder of the transfer source a GAN unit fine-tunes (None: it starts from scratch)."""
    if cell.kind != "gan" or not sweep.transfer_from or cell.variant in VARIANT_KIND:
        return None
    return sweep.source_dir(dataset, cell.fraction, cell.seed)


def gan_cells(
    sweep: Sweep, dataset: str, none: dict[tuple[float, int], int], sources: dict | None = None
) -> list[Cell]:
    """The GAN units by fraction, variant, class set and seed; each needs the K of its fraction and
    seed's `none` classifier (`none`), whose features its evaluation uses, when there is one, and
    the K of its transfer source (`sources`) when there is one."""
    sources = sources or {}
    return [
        Cell(
            "gan",
            f"gan-{class_tag(unit)}-f{f:g}-s{s}" + ("" if v == "filters" else f"-{v}"),
            f,
            s,
            sweep.gan_dir(dataset, unit, f, s, v),
            unit=tuple(unit),
            variant=v,
            # a unit of another kind fine-tunes its own source (diffusion.init_from), not this one
            needs=tuple(
                k[f, s] for k in (none, {} if v in VARIANT_KIND else sources) if (f, s) in k
            ),
        )
        for f in sweep.fractions
        for v in sweep.gan_variants()
        for unit in sweep.gan_units()
        for s in sweep.seeds
    ]


def cell_plan(sweep: Sweep, dataset: str) -> list[Cell]:
    """Every cell of the sweep in a stable order, K = position: the classifiers of the arms without
    a GAN, then the transfer sources (with `transfer_from`), then the GAN units (each needing its
    fraction and seed's `none` classifier, when the sweep has that arm, and source), then the
    classifiers of the GAN arms (each needing its GAN units), then the classifiers that start from
    another arm's (each needing that arm's cell of its fraction and seed)."""
    plain = classifier_cells(sweep, dataset, "plain")
    none = {(c.fraction, c.seed): k for k, c in enumerate(plain) if c.arm == "none"}
    sources = source_cells(sweep, dataset)
    at = {(c.fraction, c.seed): len(plain) + k for k, c in enumerate(sources)}
    plain += sources
    gans = gan_cells(sweep, dataset, none, at)
    first = len(plain)  # the K of the first GAN unit
    synthetic = [
        replace(
            c,
            needs=tuple(
                first + k
                for k, g in enumerate(gans)
                if (g.fraction, g.seed, g.variant) == (c.fraction, c.seed, GAN_VARIANT[c.arm])
            ),
        )
        for c in classifier_cells(sweep, dataset, "synthetic")
    ]
    done = plain + gans + synthetic
    at = {(c.arm, c.fraction, c.seed): k for k, c in enumerate(done) if c.kind == "classify"}
    started = [
        replace(c, needs=(at[START_FROM_ARM[c.arm], c.fraction, c.seed],))
        for c in classifier_cells(sweep, dataset, "started")
    ]
    return done + started


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

"""The experiment: rare classes × fractions × arms × seeds as resumable cells, then tables and a report.

Cells: the `none` and `standard` classifiers of a (fraction, seed) do not depend on the class, so
one run serves every class (its score for that class is read). The GAN is part of the treatment:
each (rare class, fraction, seed) trains its own GAN (the seed drives its init, latents and
synthesis), on that fraction's train positives (the classifier's own fraction mask), and the `gan`
arm of a (fraction, seed) trains one classifier on real rows plus the synthetic rows of that seed's
GANs; with `conditional` one label-conditional GAN per fraction and seed learns all rare classes. Every run is a folder with
DONE when finished and ERROR when it failed; re-running skips finished runs and resumes unfinished
ones from their last checkpoint.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from pipelines.classifier.run import ARMS, classifier_fingerprint, train_classifier, train_rows
from pipelines.data.prepare import Prepared
from pipelines.data.splits import check_fractions
from pipelines.errors import RareganError
from pipelines.gan.distances import space_label
from pipelines.gan.eval_run import evaluate_gan_run
from pipelines.gan.run import CKPT, class_tag, train_gan, training_images
from pipelines.gan.synth import synthesize
from pipelines.runs import (
    FINGERPRINT,
    RunOptions,
    StaleRunError,
    atomic_write_text,
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
        """Where the tables and the report go."""
        return run_path(self.runs, dataset, "compare", self.name)


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


def plan(sweep: Sweep, dataset: str) -> pd.DataFrame:
    """One row per (class, fraction, arm, seed) with its run folder."""
    rows = [
        {
            "class": cls,
            "fraction": f,
            "arm": arm,
            "seed": s,
            "run": str(sweep.classify_dir(dataset, arm, f, s)),
        }
        for f in sweep.fractions
        for cls in sweep.classes
        for arm in sweep.arms
        for s in sweep.seeds
    ]
    return pd.DataFrame(rows)


def status_of(run: Path) -> tuple[str, str]:
    """done / failed (with its error) / pending, read from the run folder."""
    run = Path(run)
    if is_done(run):
        return "done", ""
    if (run / ERROR).is_file():
        return "failed", (run / ERROR).read_text().strip().splitlines()[0]
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


def execute(sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str) -> pd.DataFrame:
    """Run every unfinished cell (each seed's GANs and synthetic sets first), then the cells table."""
    for f in sweep.fractions:
        for seed in sweep.seeds:
            synth_sets: dict[str, list[Path | None]] = {}
            for variant in sweep.gan_variants():
                vcfg = variant_config(cfg, variant)
                synth_sets[variant] = []
                for unit in sweep.gan_units():
                    gdir = sweep.gan_dir(dataset, unit, f, seed, variant)
                    step = partial(gan_unit, sweep, prepared, vcfg, unit, f, seed, gdir)
                    synth_sets[variant].append(attempt(gdir, step))
            c = {**cfg, "classify": {**cfg["classify"], "seed": seed}}
            for arm in sweep.arms:
                run = sweep.classify_dir(dataset, arm, f, seed)
                synth = synth_sets.get(GAN_VARIANT.get(arm, ""), [])
                if None in synth:
                    run.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(
                        run / ERROR,
                        "a GAN of this fraction and seed failed; see its run folder's ERROR\n",
                    )
                    continue
                resume = (run / "checkpoints" / "last.ckpt").exists()
                attempt(
                    run,
                    partial(
                        train_classifier,
                        prepared,
                        c,
                        run,
                        fraction=f,
                        arm=arm,
                        classes=sweep.classes,
                        synth=synth,
                        opts=RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress),
                    ),
                )
    return collect_cells(sweep, dataset)


def collect_cells(
    sweep: Sweep, dataset: str, prepared: Prepared | None = None, cfg: dict | None = None
) -> pd.DataFrame:
    """The cells table with each cell's status read from disk (no training). Given the data and
    config, a finished cell made by other settings stops the collection (never a mixed table)."""
    cells = plan(sweep, dataset)
    states = [status_of(Path(r)) for r in cells["run"]]
    cells["status"] = [s for s, _ in states]
    cells["error"] = [e for _, e in states]
    if prepared is not None and cfg is not None:
        rows = {
            f: train_rows(prepared, f, cfg["data"]["seed"], sweep.classes) for f in sweep.fractions
        }
        for row in cells[cells["status"] == "done"].itertuples():
            check_cell(sweep, prepared, cfg, rows[row.fraction], row, Path(row.run))
    return cells


def check_cell(sweep: Sweep, prepared: Prepared, cfg: dict, rows, cell, run: Path) -> None:
    """A StaleRunError when a finished cell's recorded settings differ from this sweep's (the
    synthetic sets' ids are not compared: their GANs are checked when they are reused)."""
    c = {**cfg, "classify": {**cfg["classify"], "seed": cell.seed}}
    args = (rows, cell.fraction, cell.arm, sweep.model, sweep.classes, [])
    now = classifier_fingerprint(prepared, c, *args)
    path = run / FINGERPRINT
    before = json.loads(path.read_text())["settings"] if path.is_file() else {}
    refuse_stale(
        run, before, now["settings"], path.is_file(), ignore=("synth", "pretrained", "freeze")
    )


def gan_quality(sweep: Sweep, dataset: str) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """FID/KID of every finished GAN (class set, fraction, seed) and the first seed's image grids."""
    rows, images = [], []
    units = [(u, v) for v in sweep.gan_variants() for u in sweep.gan_units()]
    for f in sweep.fractions:
        for unit, variant in units:
            cls = " + ".join(unit) + (
                " (GAN without the filter bank)" if variant == "nofilter" else ""
            )
            for seed in sweep.seeds:
                ev = sweep.gan_dir(dataset, unit, f, seed, variant) / "eval"
                if not (ev / "eval.json").is_file():
                    continue
                rep = json.loads((ev / "eval.json").read_text())
                space = space_label(str(rep.get("feature_space", "random-conv")))
                rows.append(
                    {
                        "class": cls,
                        "fraction": f,
                        "seed": seed,
                        "fid": rep["fid"],
                        "kid": rep["kid"],
                    }
                    | {"feature_space": space}
                )
                if seed != sweep.seeds[0]:
                    continue
                what = f"{cls}, {f:g} %, seed {seed}"
                images.append(
                    (
                        ev / "real_vs_synthetic.png",
                        f"{what}: real train positives (top) vs GAN samples",
                    )
                )
                images.append(
                    (
                        ev / "closest_pairs.png",
                        f"{what}: synthetic images and their nearest real training image",
                    )
                )
    return pd.DataFrame(rows), images

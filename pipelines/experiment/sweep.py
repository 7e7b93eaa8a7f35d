"""The experiment: rare classes × fractions × arms × seeds as resumable cells, then tables and a report.

Cells: the `none` and `standard` classifiers of a (fraction, seed) do not depend on the class, so
one run serves every class (its score for that class is read). The `gan` arm of a (fraction, seed)
trains one classifier on real rows plus the synthetic rows of every rare class's GAN of that
fraction (each GAN trained only on that fraction's train positives); with `conditional` one
label-conditional GAN per fraction learns all rare classes at once. Every run is a folder with
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

from pipelines.classifier.run import ARMS, train_classifier
from pipelines.data.prepare import Prepared
from pipelines.data.splits import check_fractions
from pipelines.errors import RareganError
from pipelines.gan.distances import space_label
from pipelines.gan.eval_run import evaluate_gan_run
from pipelines.gan.run import CKPT, class_tag, train_gan, training_images
from pipelines.gan.synth import synthesize
from pipelines.runs import RunOptions, StaleRunError, atomic_write_text, is_done, run_path

ERROR = "ERROR"


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

    def gan_dir(self, dataset: str, classes: list[str], fraction: float) -> Path:
        """Run folder of the GAN of a class set at one fraction."""
        return run_path(
            self.runs, dataset, "gan", f"{self.name}-{class_tag(classes)}-f{fraction:g}"
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
    if "gan" in sweep.arms:
        for unit in sweep.gan_units():  # the smallest fraction must leave each GAN enough images
            training_images(prepared, unit, sweep.fractions[0], cfg)


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


def attempt(run: Path, fn) -> bool:
    """Run one step; on failure write ERROR (first line: the reason) and go on; True when it finished.

    A finished run is handed to `fn` too, which reuses it only when its fingerprint matches; a run
    made by other settings stops the sweep (StaleRunError) rather than mixing into its table.
    """
    run = Path(run)
    if not is_done(run):
        (run / ERROR).unlink(missing_ok=True)
    try:
        fn()
        return True
    except (KeyboardInterrupt, StaleRunError):
        raise
    except Exception as err:  # a failed cell is recorded and reported, never dropped
        run.mkdir(parents=True, exist_ok=True)
        reason = str(err) if isinstance(err, RareganError) else f"{type(err).__name__}: {err}"
        atomic_write_text(run / ERROR, reason.replace("\n", " ") + "\n\n" + traceback.format_exc())
        return False


def execute(sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str) -> pd.DataFrame:
    """Run every unfinished cell (GANs and synthetic sets first), then return the cells table."""
    synth_ratio = cfg["compare"]["synth_ratio"]
    for f in sweep.fractions:
        synth_sets: list[Path] = []
        if "gan" in sweep.arms:
            for unit in sweep.gan_units():
                gdir = sweep.gan_dir(dataset, unit, f)
                resume = (gdir / CKPT).exists()
                ok = attempt(
                    gdir,
                    partial(
                        train_gan,
                        prepared,
                        unit,
                        f,
                        cfg,
                        gdir,
                        RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress),
                    ),
                )
                if ok:
                    synth = synthesize(
                        gdir,
                        ratio=synth_ratio,
                        seed=0,
                        label_rows=cfg["compare"]["label_rows"],
                        redo=sweep.redo,
                    )
                    synth_sets.append(synth)
                    if not (gdir / "eval" / "eval.json").is_file():
                        evaluate_gan_run(
                            gdir, synth_sets[-1], cache=prepared.store.data_path.parent
                        )
        for seed in sweep.seeds:
            c = {**cfg, "classify": {**cfg["classify"], "seed": seed}}
            for arm in sweep.arms:
                run = sweep.classify_dir(dataset, arm, f, seed)
                if arm == "gan" and len(synth_sets) < len(sweep.gan_units()):
                    run.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(
                        run / ERROR, "a GAN of this fraction failed; see its run folder's ERROR\n"
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
                        synth=synth_sets if arm == "gan" else [],
                        opts=RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress),
                    ),
                )
    return collect_cells(sweep, dataset)


def collect_cells(sweep: Sweep, dataset: str) -> pd.DataFrame:
    """The cells table with each cell's status read from disk (no training)."""
    cells = plan(sweep, dataset)
    states = [status_of(Path(r)) for r in cells["run"]]
    cells["status"] = [s for s, _ in states]
    cells["error"] = [e for _, e in states]
    return cells


def gan_quality(sweep: Sweep, dataset: str) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """FID/KID per GAN (class or class set) and fraction from each finished eval, and its image grids."""
    rows, images = [], []
    for f in sweep.fractions:
        for unit in sweep.gan_units():
            cls = " + ".join(unit)
            ev = sweep.gan_dir(dataset, unit, f) / "eval"
            if (ev / "eval.json").is_file():
                rep = json.loads((ev / "eval.json").read_text())
                space = space_label(str(rep.get("feature_space", "random-conv")))
                rows.append(
                    {
                        "class": cls,
                        "fraction": f,
                        "fid": rep["fid"],
                        "kid": rep["kid"],
                        "feature_space": space,
                    }
                )
                images.append(
                    (
                        ev / "real_vs_synthetic.png",
                        f"{cls}, {f:g} %: real train positives (top) vs GAN samples",
                    )
                )
                images.append(
                    (
                        ev / "closest_pairs.png",
                        f"{cls}, {f:g} %: synthetic images and their nearest real training image",
                    )
                )
    return pd.DataFrame(rows), images

"""Running one cell of a sweep: a GAN unit or a classifier, under a lock, leaving its record.

A GAN unit trains its GAN (fine-tuning its transfer source's, when the sweep has one), synthesizes
its set and evaluates it in the feature space of its fraction and seed's `none` classifier (seeded
random features when the sweep has no `none` arm); a source trains the abundant class's GAN; a
classifier trains on real rows plus the synthetic sets of the GAN units it needs. A cell is refused
while a cell it needs is not done (`DependencyError`), and while another process holds its lock
(`CellBusy`). A failure is written to the run folder's ERROR and fails only that cell (`attempt`);
a finished cell leaves its record (`cell_records.py`).
"""

from __future__ import annotations

import math
import shutil
import traceback
from functools import partial
from pathlib import Path

from pipelines.arms import RATIO_ARMS
from pipelines.classifier.arms import train_rows
from pipelines.classifier.run import classifier_fingerprint, train_classifier
from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.experiment.cell_records import record_cell
from pipelines.experiment.plan import ERROR, Cell, Sweep, cell_config
from pipelines.experiment.records import read_json, read_record, record_path, remove_record
from pipelines.fidelity.eval_run import eval_current, evaluate_gan_run
from pipelines.fingerprints import RunOptions, StaleRunError, check_fingerprint, open_run
from pipelines.gan.run import CKPT, train_gan
from pipelines.generators import train
from pipelines.generators.synth import samples_for, synthesize
from pipelines.runs import atomic_write_text, file_lock, is_done, mark_done, write_json

BEST = "checkpoints/best.ckpt"  # a classifier run's checkpoint whose features evaluate its GANs


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
    classifier: Path | None = None,
) -> Path:
    """One GAN of the sweep (its seed drives init, latents and synthesis), its synthetic set and
    its evaluation in `classifier`'s feature space (None: random features); returns the synthetic
    set. A unit with `condition_on` classes synthesizes only its studied classes, and is evaluated
    on its own sample of every class it learned (about as many of the studied ones as the set
    has), whose per-class figures the report shows. Any failure here fails only this unit's cells."""
    opts = RunOptions(resume=(gdir / CKPT).exists(), redo=sweep.redo, progress=sweep.progress)
    train(prepared, unit, fraction, cfg, gdir, opts)  # cfg: the unit's (cell_config): any kind
    c, studied = cfg["compare"], sweep.studied(unit)
    only = studied if len(studied) < len(unit) else None
    synth = synthesize(
        gdir,
        ratio=c["synth_ratio"],
        seed=seed,
        only=only,
        label_rows=c["label_rows"],
        redo=sweep.redo,
    )
    if not eval_current(gdir / "eval" / "eval.json", classifier):
        cache = prepared.store.data_path.parent
        n = samples_for(gdir, studied, read_json(synth / "summary.json")["n"]) if only else None
        evaluate_gan_run(
            gdir, None if only else synth, n=n or 256, seed=seed, classifier=classifier, cache=cache
        )
    return synth


class DependencyError(RareganError):
    """A cell whose needed cells are not done here; `failed` when one of them failed, or when its
    run folder lacks what its record says is there."""

    def __init__(self, message: str, failed: bool) -> None:
        super().__init__(message)
        self.failed = failed


class CellBusy(RareganError):
    """A cell that another process is running now."""


def needed_record(
    sweep: Sweep, dataset: str, cells: list[Cell], k: int, j: int, check
) -> tuple[dict, str]:
    """The record of cell `j` that cell `k` needs, checked as current, and the start of a message
    about it; DependencyError when that cell is not done (`failed` when it failed)."""
    need, folder = cells[j], sweep.records_dir(dataset)
    record = read_record(folder, need.id)
    what = {"gan": "GAN unit", "source": "source GAN"}.get(need.kind, "classifier cell")
    head = f"cell {k} ({cells[k].id}) needs {what} {j} ({need.id})"
    if record is None:
        failed = (need.run / ERROR).is_file()
        state = "failed (see its run folder's ERROR)" if failed else "is not done"
        raise DependencyError(f"{head}, which {state}; run --cell {j} first", failed)
    check(need, record, record_path(folder, need.id))
    return record, head


def missing(head: str, what: str, record: Path, j: int) -> DependencyError:
    """The error of a needed cell whose record is here but whose run folder's `what` is not."""
    return DependencyError(
        f"{head}: its record is here but its {what} not; copy its run folder here, or delete "
        f"{record} and run --cell {j} again",
        failed=True,
    )


def needed_synth(sweep: Sweep, dataset: str, cells: list[Cell], k: int, j: int, check) -> Path:
    """The synthetic set of GAN unit `j` that cell `k` needs; DependencyError when not done here."""
    gan = cells[j]
    record, head = needed_record(sweep, dataset, cells, k, j, check)
    synth = gan.run / record["synthetic"]
    if not (is_done(gan.run) and is_done(synth)):
        where = record_path(sweep.records_dir(dataset), gan.id)
        raise missing(head, f"synthetic images {synth} are", where, j)
    return synth


def needed_source(sweep: Sweep, dataset: str, cells: list[Cell], k: int, j: int, check) -> Path:
    """The run of transfer source `j` that GAN unit `k` fine-tunes; DependencyError when not done here."""
    _, head = needed_record(sweep, dataset, cells, k, j, check)
    if not ((cells[j].run / CKPT).is_file() and is_done(cells[j].run)):
        where = record_path(sweep.records_dir(dataset), cells[j].id)
        raise missing(head, f"run {cells[j].run} is", where, j)
    return cells[j].run


def needed_classifier(sweep: Sweep, dataset: str, cells: list[Cell], k: int, j: int, check) -> Path:
    """The checkpoint of classifier cell `j` whose features GAN unit `k` is evaluated in;
    DependencyError when that cell is not done here."""
    _, head = needed_record(sweep, dataset, cells, k, j, check)
    ckpt = cells[j].run / BEST
    if not ckpt.is_file():
        where = record_path(sweep.records_dir(dataset), cells[j].id)
        raise missing(head, f"checkpoint {ckpt} is", where, j)
    return ckpt


def run_cell(
    sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str, cells: list[Cell], k: int, check
) -> str:
    """Run cell `k` and leave its record: "done" (also when its record, made by these settings, was
    there) or "failed" (its ERROR written). Refuses a cell whose needed cells are not done
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
        step = cell_step(sweep, prepared, cfg, dataset, cells, k, check)
        return "failed" if attempt(cell.run, step) is None else "done"


def cell_step(
    sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str, cells: list[Cell], k: int, check
):
    """What running cell `k` does, once the cells it needs are found done (else DependencyError):
    a callable that trains (or reuses) its run and writes its record."""
    cell = cells[k]
    if cell.kind == "classify":
        gans = [j for j in cell.needs if cells[j].kind == "gan"]
        synth = [needed_synth(sweep, dataset, cells, k, j, check) for j in gans]
        start = [
            needed_classifier(sweep, dataset, cells, k, j, check)
            for j in cell.needs
            if cells[j].kind == "classify"
        ]
        start_from = start[0] if start else None
        if cell.arm in RATIO_ARMS:
            units = [cells[j] for j in gans]
            return partial(ratio_cell, sweep, prepared, cfg, dataset, cells, cell, synth, units)
        return partial(classify_cell, sweep, prepared, cfg, dataset, cells, cell, synth, start_from)
    if cell.kind == "source":
        return partial(source_cell, sweep, prepared, cfg, dataset, cells, cell)
    need = {
        kind: [j for j in cell.needs if cells[j].kind == kind] for kind in ("classify", "source")
    }
    ckpt = [needed_classifier(sweep, dataset, cells, k, j, check) for j in need["classify"]]
    source = [needed_source(sweep, dataset, cells, k, j, check) for j in need["source"]]
    ucfg = cell_config(cfg, cell.kind, cell.seed, cell.variant, source[0] if source else None)
    args = (sweep, prepared, ucfg, list(cell.unit), cell.fraction, cell.seed, cell.run)

    def step() -> Path:
        synth = gan_unit(*args, classifier=ckpt[0] if ckpt else None)
        return record_cell(sweep, cfg, dataset, cells, cell, synth)

    return step


def choose_ratio(scores: dict[float, float | None], metric: str, run: Path) -> float:
    """The ratio with the best validation score in its metric's direction (a loss: the lowest), the
    smaller ratio on a tie; a ratio without a finite score is never chosen."""
    sign = -1.0 if str(metric).endswith("loss") else 1.0
    finite = [r for r in sorted(scores) if scores[r] is not None and math.isfinite(scores[r])]
    if not finite:
        raise RareganError(f"{run}: no ratio of {sorted(scores)} has a finite validation score")
    return max(finite, key=lambda r: (sign * scores[r], -r))


def ratio_cell(
    sweep: Sweep,
    prepared: Prepared,
    cfg: dict,
    dataset: str,
    cells: list[Cell],
    cell: Cell,
    synth: list[Path],
    units: list[Cell],
) -> Path:
    """The synthetic ratio chosen on validation (RATIO_ARMS): one classifier of the gan arm per
    ratio of compare.ratio_grid (its run in `<run>/ratio-<r>`, synthetic sets drawn from the same
    GANs with the cell's seed), the one with the best validation score (its selection metric; the
    smaller ratio on a tie) is the cell's: its test predictions and metrics, with the chosen ratio
    and every ratio's validation score, are the cell's run and record. Test never chooses."""
    c = cell_config(cfg, cell.kind, cell.seed)
    grid = sorted(float(r) for r in cfg["compare"]["ratio_grid"])
    rows = train_rows(prepared, cell.fraction, cfg["data"]["seed"], sweep.classes)
    fp = classifier_fingerprint(
        prepared, c, rows, cell.fraction, cell.arm, sweep.model, sweep.classes, synth
    )
    fp = {"id": fp["id"], "settings": fp["settings"]}
    run = cell.run
    if check_fingerprint(run, fp, sweep.redo) and is_done(run):
        return record_cell(sweep, cfg, dataset, cells, cell)
    open_run(run, fp, {**c, "run": {"arm": cell.arm, "fraction": cell.fraction, "grid": grid}})
    scores = {}
    for ratio in grid:
        sets = []
        for unit in units:
            studied = sweep.studied(unit.unit)
            only = studied if len(studied) < len(unit.unit) else None
            sets.append(
                synthesize(
                    unit.run,
                    ratio=ratio,
                    seed=cell.seed,
                    only=only,
                    label_rows=cfg["compare"]["label_rows"],
                    redo=sweep.redo,
                )  # fmt: skip
            )
        sub = run / f"ratio-{ratio:g}"
        resume = (sub / "checkpoints" / "last.ckpt").exists()
        opts = RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress)
        train_classifier(
            prepared, c, sub, fraction=cell.fraction, arm="gan", classes=sweep.classes,
            synth=sets, opts=opts,
        )  # fmt: skip
        made = read_json(sub / "metrics.json")
        scores[ratio] = made["best_val"]
    chosen = choose_ratio(scores, made["selection_metric"], run)
    metrics = read_json(run / f"ratio-{chosen:g}" / "metrics.json")
    metrics |= {"arm": cell.arm, "chosen_ratio": chosen, "val_by_ratio": scores}
    shutil.copyfile(run / f"ratio-{chosen:g}" / "predictions.csv", run / "predictions.csv")
    write_json(run / "metrics.json", metrics)
    mark_done(run, {"chosen_ratio": chosen})
    return record_cell(sweep, cfg, dataset, cells, cell)


def source_cell(
    sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str, cells: list[Cell], cell: Cell
) -> Path:
    """Train (or reuse, or resume) the transfer source of a fraction and seed, write its record."""
    g = cell_config(cfg, cell.kind, cell.seed, "source")
    opts = RunOptions(resume=(cell.run / CKPT).exists(), redo=sweep.redo, progress=sweep.progress)
    train_gan(prepared, list(cell.unit), cell.fraction, g, cell.run, opts)
    return record_cell(sweep, cfg, dataset, cells, cell)


def classify_cell(
    sweep: Sweep,
    prepared: Prepared,
    cfg: dict,
    dataset: str,
    cells: list[Cell],
    cell: Cell,
    synth: list[Path],
    start_from: Path | None = None,
) -> Path:
    """Train (or reuse, or resume) one classifier of the sweep (starting from `start_from`'s
    weights for the START_FROM_ARM arms) and write its record."""
    resume = (cell.run / "checkpoints" / "last.ckpt").exists()
    train_classifier(
        prepared,
        cell_config(cfg, cell.kind, cell.seed),
        cell.run,
        fraction=cell.fraction,
        arm=cell.arm,
        classes=sweep.classes,
        synth=synth,
        opts=RunOptions(resume=resume, redo=sweep.redo, progress=sweep.progress),
        start_from=start_from,
    )
    return record_cell(sweep, cfg, dataset, cells, cell)

"""The experiment: rare classes × fractions × arms × seeds as resumable cells, then tables and a report.

Cells: the `none` and `standard` classifiers of a (fraction, seed) do not depend on the class, so
one run serves every class (its score for that class is read). The GAN is part of the treatment:
each (rare class, fraction, seed) trains its own GAN (the seed drives its init, latents and
synthesis), on that fraction's train positives (the classifier's own fraction mask), and the `gan`
arm of a (fraction, seed) trains one classifier on real rows plus the synthetic rows of that seed's
GANs; with `conditional` one label-conditional GAN per fraction and seed learns all rare classes;
with `condition_on` each GAN also learns those (unstudied) classes, and only the studied ones are
synthesized.

The work is a plan of cells in a stable order (index K): the classifiers (arm, fraction, seed) of
the arms that need no GAN, then every GAN unit, which needs its fraction and seed's `none`
classifier (its samples are evaluated in that classifier's feature space; in seeded random
features, labelled so, when the sweep has no `none` arm), then the classifiers of the GAN arms,
which need their fraction and seed's GAN units. `run_cell` runs one cell, under a lock so that two
processes never run the same one, and leaves its record (`records.py`) in the sweep's results
folder when it is done; the full sweep is that, cell by cell. Every run is a folder with DONE when
finished and ERROR when it failed; re-running skips cells whose record is there and resumes
unfinished runs from their last checkpoint. Tables are collected from the records alone.

Where it lives: the plan (`Sweep`, its cells, their status and listing) in `plan.py`; running one
cell (`run_cell`) in `execute.py`; what a cell's record says and the check that it is current in
`cell_records.py`. This module validates a sweep, runs it whole, and collects its cells table and
its GANs' figures from the records.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.arms import RATIO_ARMS, START_FROM_ARM, variant_kind, variant_section
from pipelines.classifier.arms import ARMS
from pipelines.data.prepare import Prepared
from pipelines.data.splits import check_fractions
from pipelines.errors import RareganError
from pipelines.experiment.cell_records import GRIDS, record_checker
from pipelines.experiment.execute import CellBusy, DependencyError, run_cell
from pipelines.experiment.plan import (
    ERROR,
    Cell,
    Sweep,
    cell_plan,
    classify_id,
    plan,
    status_of,
    variant_config,
)
from pipelines.experiment.records import PREDICTIONS, read_record, record_path, side_file
from pipelines.fidelity.distances import space_label
from pipelines.fidelity.metrics import near_copy_share
from pipelines.gan.run import check_condition_on, require_conditional, training_images
from pipelines.gan.transfer import check_source_images, transfer_source
from pipelines.generators import section
from pipelines.runs import atomic_write_text


def validate(sweep: Sweep, prepared: Prepared, cfg: dict) -> None:
    """Refuse bad classes, fractions, arms or seeds before any training starts."""
    sweep.fractions = check_fractions(sweep.fractions)
    bad = [a for a in sweep.arms if a not in ARMS]
    if bad:
        raise RareganError(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
    if not sweep.classes:
        raise RareganError("give at least one rare class (--classes)")
    for arm, base in START_FROM_ARM.items():
        if arm in sweep.arms and base not in sweep.arms:
            raise RareganError(
                f"the {arm} arm starts from the {base} arm's classifiers: add {base} to the arms"
            )
    prepared.require_test_positives(sweep.classes)
    check_condition_on(prepared.records.label_names, sweep.classes, sweep.condition_on)
    if max(len(unit) for unit in sweep.gan_units()) > 1 and sweep.gan_variants():
        require_conditional(cfg, "compare")
    check_transfer(sweep, prepared, cfg)
    for variant in sweep.gan_variants():  # the smallest fraction must leave each GAN enough images
        vcfg = variant_config(cfg, variant)
        for unit in sweep.gan_units():
            training_images(prepared, unit, sweep.fractions[0], vcfg, section(vcfg))
    if "diffusion" in sweep.gan_variants():
        if max(len(unit) for unit in sweep.gan_units()) > 1:
            raise RareganError(
                "the diffusion arms train one-class models; label-conditional units "
                "(compare.condition_on, compare.conditional_gan) are the PGGAN's: drop one of them"
            )
        from pipelines.generators.diffusion import source_run

        if (source := source_run(cfg)) is not None:  # one source for every fraction: the smallest's
            for fraction in sweep.fractions:
                check_source_images(source, prepared, fraction, cfg["data"]["seed"])


def check_transfer(sweep: Sweep, prepared: Prepared, cfg: dict) -> None:
    """Refuse (one line) a gan.init_from run that learned from images a fraction's GANs may not
    (see check_source_images), a transfer source class the data lacks or the sweep studies, one beside
    another way to start the GANs or beside label-conditional GANs (a source of another
    architecture), and one with too few images at the smallest fraction."""
    if not sweep.gan_variants():
        return
    classes = list(sweep.transfer_from)
    if classes and cfg["gan"]["init_from"] is not None:
        raise RareganError(
            "give one GAN to start from: gan.init_from (one run for every fraction) or "
            "compare.transfer_from (a source per fraction and seed), not both"
        )
    source = transfer_source(cfg)  # one run for every fraction: it must be of the smallest
    if source is not None:
        for fraction in sweep.fractions:
            check_source_images(source, prepared, fraction, cfg["data"]["seed"])
    if not classes:
        return
    names = prepared.records.label_names
    for cls in classes:
        if cls not in names:
            raise RareganError(
                f"unknown class {cls!r} in compare.transfer_from; this data has {', '.join(names)}"
            )
        if cls in sweep.classes:
            raise RareganError(
                f"compare.transfer_from names {cls!r}, a class the sweep studies: name only others"
            )
    if max(len(unit) for unit in sweep.gan_units()) > 1:
        raise RareganError(
            "compare.transfer_from starts one-class GANs; label-conditional GANs "
            "(compare.condition_on, compare.conditional_gan) would need a source of another architecture: drop one of them"
        )
    training_images(prepared, classes, sweep.fractions[0], variant_config(cfg, "source"))


def execute(sweep: Sweep, prepared: Prepared, cfg: dict, dataset: str) -> pd.DataFrame:
    """Run every cell without a record, fraction and seed by fraction and seed, each in plan order
    (its `none` classifier, its GANs, its GAN classifiers), then the cells table. A cell another
    process is running stays pending here, and so do the cells that need it."""
    cells = cell_plan(sweep, dataset)
    check = record_checker(sweep, prepared, cfg, dataset)
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
    check = record_checker(sweep, prepared, cfg, dataset) if prepared is not None and cfg else None
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


def record_notes(sweep: Sweep, dataset: str) -> list[str]:
    """For the report, from one pass over the sweep's records: what made them (the code versions —
    "not recorded" before records said so — and the precision each kind of cell ran in, so that a
    table mixing machines says so), and the synthetic ratio each RATIO_ARMS cell chose on
    validation, with every ratio's validation score (never test's)."""
    folder = sweep.records_dir(dataset)
    code: dict[str, int] = {}
    precisions: dict[str, dict[str, int]] = {}
    ratios = []
    for cell in cell_plan(sweep, dataset):
        record = read_record(folder, cell.id)
        if record is None:
            continue
        version = record.get("code") or "not recorded"
        code[version] = code.get(version, 0) + 1
        if cell.kind == "classify":
            used = (record.get("metrics") or {}).get("precision") or "not recorded"
        else:
            settings = record["fingerprint"].get("settings", {})
            section = variant_section(cell.variant)
            used = "bf16" if settings.get(f"{section}.precision") == "bf16" else "32"  # resolved
        kind = precisions.setdefault("classifiers" if cell.kind == "classify" else "GANs", {})
        kind[str(used)] = kind.get(str(used), 0) + 1
        if cell.kind == "classify" and cell.arm in RATIO_ARMS:
            m = record["metrics"]
            scores = ", ".join(f"{float(r):g}×: {v:.3f}" for r, v in m["val_by_ratio"].items())
            ratios.append(
                f"{cell.arm} at {cell.fraction:g} %, seed {cell.seed}: chose {m['chosen_ratio']:g}× "
                f"the real positives on validation ({m['selection_metric']} by ratio: {scores})."
            )
    if not code:
        return []

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} ({n} cells)" for k, n in sorted(d.items()))

    lines = [f"Code that made the records: {counts(code)}."]
    for kind, used in sorted(precisions.items()):
        mixed = " — mixed precisions in one table" if len(used) > 1 else ""
        lines.append(f"Precision of the {kind}: {counts(used)}{mixed}.")
    return lines + ratios


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
        "near_copies": near_copy_share(rep),
        "memorized": (rep.get("memorized") or {}).get("share", nan),
    }


def utility(sweep: Sweep, folder: Path, cell: Cell, cls: str) -> dict:
    """Train on synthetic, test on real: `cls`'s test AUC of the synth_only classifier of a GAN
    unit's fraction and seed (its positives of the class only the gan arm's GAN samples) and, beside
    it, the `none` classifier's (the real positives). NaN for a GAN the synth_only arm does not use
    (without the filter bank), a class the sweep does not study, or a record not yet there."""
    out = {}
    for key, arm in (("utility", "synth_only"), ("utility_real", "none")):
        # synth_only takes the gan arm's GAN: the filter-bank PGGAN, no other variant
        used = {"synth_only", arm} <= set(sweep.arms) and cell.variant == "filters"
        used = used and cls in sweep.classes
        rec = read_record(folder, classify_id(arm, cell.fraction, cell.seed)) if used else None
        auc = ((rec or {}).get("metrics", {}).get("auc", {}).get(cls) or {}).get("auc")
        out[key] = float("nan") if auc is None else auc
    return out


def gan_quality(sweep: Sweep, dataset: str) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """FID/KID, C2ST and precision/recall (held-out, beside real-vs-real) of every GAN unit with a
    record, and the first seed's image grids, from the records. A GAN that also learned
    `condition_on` classes gets one row per studied class, its held-out figures those of that
    class alone (FID/KID and near copies over all the classes it learned). Beside the readable
    `class` label each row says which studied class its held-out figures are of (`studied`; the
    joined label for a GAN measured on several at once) and whether the GAN learned from the
    filter bank (`filter_bank`: it feeds the gan arms, not gan_nofilter). A GAN of the gan arm measured
    on one class also gets its utility (`utility`, `utility_real`) when the sweep has synth_only."""
    folder = sweep.records_dir(dataset)
    rows, images = [], []
    for cell in cell_plan(sweep, dataset):
        record = read_record(folder, cell.id) if cell.kind == "gan" else None
        if record is None:
            continue
        rep = record["eval"]
        kind = variant_kind(cell.variant)
        what = " (GAN without the filter bank)" if cell.variant == "nofilter" else ""
        what = " (diffusion model)" if kind == "diffusion" else what
        if sweep.transfer_from and kind == "pggan":
            what += f" (fine-tuned from a {' + '.join(sweep.transfer_from)} GAN)"
        cls = " + ".join(cell.unit) + what
        space = space_label(str(rep.get("feature_space", "random-conv")))
        row = {"fraction": cell.fraction, "seed": cell.seed, "generator": kind}
        row["filter_bank"] = cell.variant != "nofilter"
        row |= {"fid": rep["fid"], "kid": rep["kid"], "feature_space": space}
        held_fid = rep.get("fid_heldout")  # vs real images it never saw (None: too few of them)
        row["fid_heldout"] = float("nan") if held_fid is None else held_fid
        studied = sweep.studied(cell.unit)
        if len(studied) < len(cell.unit):
            near = held(rep)["near_copies"]
            for name in studied:
                one = held(rep.get("per_class", {}).get(name, {})) | {"near_copies": near}
                label = {"class": f"{name}, by the GAN on {cls}", "studied": name}
                rows.append(label | row | one | utility(sweep, folder, cell, name))
        else:
            name = " + ".join(cell.unit)
            rows.append(
                {"class": cls, "studied": name}
                | row
                | held(rep)
                | utility(sweep, folder, cell, name)
            )
        if cell.seed != sweep.seeds[0]:
            continue
        for suffix, caption in GRIDS.items():
            path = side_file(folder, record, suffix)
            if path is not None:
                images.append((path, f"{cls}, {cell.fraction:g} %, seed {cell.seed}: {caption}"))
    return pd.DataFrame(rows), images

"""The GAN ablation: variant configs, one table of every variant's fidelity, reuse, bad input."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import tiny_config
from test_bad_inputs import assert_one_line_error, run_cli

from pipelines.cli import main
from pipelines.commands.gan_ablation import VARIANT_NAMES
from pipelines.config import load_config
from pipelines.experiment.ablation import DEFAULT_AUGMENT, VARIANTS, ablation_config
from pipelines.gan.run import augment_on


def test_variant_names_of_the_command_are_the_ablations():
    assert VARIANT_NAMES == tuple(VARIANTS)


def test_ablation_config_switches_only_the_filter_bank_and_the_augmentation():
    cfg = load_config("cpu-demo")
    bank = cfg["filters"]["names"]
    switched = ("augment", "seed", "class_balance")
    for variant, (filters, augment, _, balanced) in VARIANTS.items():
        v = ablation_config(cfg, variant, seed=3)
        assert v["filters"]["names"] == (bank if filters else [])
        assert augment_on(v["gan"]["augment"]) == augment
        assert v["gan"]["seed"] == 3
        assert v["gan"]["class_balance"] == (1.0 if balanced else 0.0)
        rest = {k: x for k, x in v["gan"].items() if k not in switched}
        assert rest == {k: x for k, x in cfg["gan"].items() if k not in switched}
    half = {**cfg, "gan": {**cfg["gan"], "class_balance": 0.5}}  # a config's own balance is kept
    assert ablation_config(half, "filters+balanced", 0)["gan"]["class_balance"] == 0.5
    assert ablation_config(half, "filters+conditional", 0)["gan"]["class_balance"] == 0.0
    assert (
        ablation_config(cfg, "augment", 0)["gan"]["augment"]["policy"] == DEFAULT_AUGMENT["policy"]
    )
    # a config that sets its own augmentation keeps it in the augmented variants
    own = {
        **cfg,
        "gan": {**cfg["gan"], "augment": {**cfg["gan"]["augment"], "policy": "cutout", "p": 0.3}},
    }
    kept = ablation_config(own, "filters+augment", 0)["gan"]["augment"]
    assert (kept["policy"], kept["p"], kept["adaptive"]) == ("cutout", 0.3, False)
    assert cfg["gan"]["augment"]["policy"] == ""  # the caller's config is not changed


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """Three variants of a tiny Fracture GAN on 400 phantoms with 40 % Fracture (enough held out),
    one of them conditioned on Lung Lesion."""
    from pipelines.data.phantoms import write_phantoms

    tmp = tmp_path_factory.mktemp("ablation")
    root = write_phantoms(tmp / "phantoms", n=400, size=64, seed=1, prevalence={"Fracture": 0.4})
    argv = [
        "gan-ablation", "--data", root, "--class", "Fracture", "--config",
        tiny_config(tmp, kimg=0.06, every=0.1), "--variants", "filters+augment", "plain",
        "plain+conditional", "--condition-on", "Lung Lesion", "--n", "48", "--out", tmp / "out", "--cache", tmp / "store", "--runs", tmp / "runs",
    ]  # fmt: skip
    argv = [str(a) for a in argv]
    assert main(argv) == 0
    return tmp / "out", argv


def test_ablation_writes_one_table_of_every_variant_with_real_baselines(ablation):
    out, _ = ablation
    table = pd.read_csv(out / "table.csv")
    assert table["variant"].tolist() == ["filters+augment", "plain", "plain+conditional"]
    assert (table["seeds"] == 1).all()
    for col in ("c2st_auc", "c2st_real", "fid_heldout", "fid_real", "precision", "recall"):
        assert table[col].notna().all(), col
    assert (
        (table["c2st_low"] <= table["c2st_auc"]) & (table["c2st_auc"] <= table["c2st_high"])
    ).all()
    assert table["c2st_ci"].str.contains("C2ST folds").all()
    # a few hundred images of a 16 px GAN are told apart from real ones
    assert (table["c2st_auc"] > table["c2st_real"]).all()
    readme = (out / "README.md").read_text()
    assert "raregan gan-ablation" in readme and "real vs real" in readme
    for variant in table["variant"]:
        assert f"grid-{variant}.png" in readme and (out / f"grid-{variant}.png").is_file()
    # the variants really differ: the augmented GAN logged its p, the plain one saw no filter copies
    runs = out / "runs"
    assert "aug_p" in pd.read_csv(runs / "filters+augment-seed0" / "losses.csv").columns
    assert "aug_p" not in pd.read_csv(runs / "plain-seed0" / "losses.csv").columns
    import json

    summaries = [
        json.loads((runs / f"{v}-seed0" / "summary.json").read_text()) for v in table["variant"]
    ]
    assert summaries[0]["training_images"] == 4 * summaries[1]["training_images"]
    assert [s.get("conditional", False) for s in summaries] == [False, False, True]
    assert summaries[2]["classes"] == ["Fracture", "Lung Lesion"]


def test_a_conditional_variant_is_measured_on_the_rare_class_alone(ablation):
    """Its row holds the Fracture figures of its eval (not the pooled ones), drawn from enough
    samples that about --n are Fracture."""
    import json

    out, _ = ablation
    run = out / "runs" / "plain+conditional-seed0"
    ev = json.loads((run / "eval" / "eval.json").read_text())
    positives = pd.read_csv(run / "positives.csv")
    share = (positives["Fracture"] > 0.5).mean()
    assert 0 < share < 1 and ev["n_fake"] == math.ceil(48 / share)
    row = pd.read_csv(out / "runs.csv").set_index("variant").loc["plain+conditional"]
    fracture = ev["per_class"]["Fracture"]
    assert row["c2st_auc"] == pytest.approx(fracture["c2st"]["auc"])
    assert row["recall"] == pytest.approx(fracture["recall"])
    held = (pd.read_csv(run / "heldout.csv")["Fracture"] > 0.5).sum()
    per_side = min(held, (positives["Fracture"] > 0.5).sum())
    assert row["c2st_n_per_side"] == per_side  # the Fracture test
    assert "label-conditional GAN on Fracture and Lung Lesion" in (out / "README.md").read_text()


def test_ablation_rerun_reuses_every_gan_and_gives_the_same_table(ablation):
    out, argv = ablation
    before = (out / "table.csv").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/generator_ema.pt")}
    assert main(argv) == 0
    assert (out / "table.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_unknown_variant_is_one_line(ablation, capsys):
    _, argv = ablation
    bad = [*argv]
    i = bad.index("--variants")
    bad[i + 1 : i + 3] = ["filters", "dropout"]
    code, err = run_cli(capsys, *bad)
    assert_one_line_error(code, err, "'dropout'", "filters+augment")


@pytest.mark.parametrize(
    "variants, condition_on, needle",
    [
        (["plain+conditional"], [], "--condition-on"),
        (["plain+conditional"], ["Fracture"], "a class the GAN is for"),
        (["plain+conditional"], ["Edema"], "'Edema'"),
    ],
)
def test_bad_conditional_variants_are_one_line(ablation, capsys, variants, condition_on, needle):
    _, argv = ablation
    bad = [*argv]
    i = bad.index("--variants")
    j = bad.index("--n")
    bad[i:j] = ["--variants", *variants] + (
        ["--condition-on", *condition_on] if condition_on else []
    )
    code, err = run_cli(capsys, *bad)
    assert_one_line_error(code, err, needle)

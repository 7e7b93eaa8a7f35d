"""One label-conditional GAN for several rare classes: training rows, run, synthesis, resume guard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from pggan import fixed_latents, to_uint8
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.data.prepare import DataSpec, prepare
from pipelines.errors import RareganError
from pipelines.gan.run import check_same_classes, condition_labels, training_images
from pipelines.gan.synth import load_generator

CLASSES = ["Fracture", "Lung Lesion"]
TINY = {
    "gan": {
        "resolution": 16,
        "channels": [16, 16, 8],
        "latent_dim": 16,
        "kimg_per_phase": 0.06,
        "batch_per_resolution": {4: 8, 8: 8, 16: 8},
        "checkpoint_every_kimg": 0.1,
    }
}


@pytest.fixture(scope="module")
def conditional_run(phantom_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cgan")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp / "run"
    argv = ["gan", "--data", str(phantom_root), "--class", *CLASSES, "--config", str(cfg)]
    argv += ["--out", str(out), "--cache", str(tmp / "store"), "--no-progress"]
    assert main(argv) == 0
    return out


def test_training_rows_are_the_union_and_labels_follow_the_bank(phantom_root, tmp_path):
    cfg = load_config("cpu-demo", TINY)
    prepared = prepare(DataSpec(phantom_root, size=16, cache_dir=tmp_path), progress=False)
    rows, images, labels = training_images(prepared, CLASSES, 100, cfg)
    alone = [set(prepared.positives(c, 100, 0)["row"]) for c in CLASSES]
    assert set(rows["row"]) == alone[0] | alone[1] and rows["row"].is_unique
    bank = 1 + len(cfg["filters"]["names"])
    assert images.shape[0] == bank * len(rows) == labels.shape[0] and labels.shape[1] == 2
    first = condition_labels(rows, CLASSES)
    assert (labels == np.tile(first, (bank, 1))).all()  # each filtered copy keeps its labels
    for k, cls in enumerate(CLASSES):
        assert (first[:, k] == (rows[cls] > 0.5)).all()
    assert first.sum(axis=1).min() >= 1  # every row shows at least one of the classes
    # one class alone: labels all 1
    _, _, one = training_images(prepared, "Fracture", 100, cfg)
    assert one.shape[1] == 1 and (one == 1).all()


def test_conditional_run_records_its_classes(conditional_run):
    summary = json.loads((conditional_run / "summary.json").read_text())
    assert summary["conditional"] and summary["classes"] == CLASSES
    assert summary["class"] == "Fracture + Lung Lesion"
    G, _ = load_generator(conditional_run)
    assert G.label_dim == 2
    positives = pd.read_csv(conditional_run / "positives.csv")
    assert ((positives[CLASSES] > 0.5).any(axis=1)).all()
    grid = np.asarray(Image.open(conditional_run / "samples" / "final.png"))
    assert grid.ndim == 2  # one channel; rows alternate Fracture / Lung Lesion


def test_synth_conditions_each_image_on_its_label_row(conditional_run, tmp_path):
    out = tmp_path / "lesion"
    argv = ["synth", "--run", str(conditional_run), "--n", "10", "--class", "Lung Lesion"]
    assert main([*argv, "--seed", "2", "--out", str(out)]) == 0
    rows = pd.read_csv(out / "synthetic.csv")
    assert len(rows) == 10 and (rows["Lung Lesion"] == 1).all() and rows["synthetic"].all()
    G, _ = load_generator(conditional_run)
    z = fixed_latents(10, G.latent_dim, 2)
    wanted = torch.from_numpy(condition_labels(rows, CLASSES))
    saved = np.stack([np.asarray(Image.open(p)) for p in rows["path"]])
    with torch.no_grad():
        same = to_uint8(G(z, None, 1.0, wanted))[:, 0].numpy()
        other = to_uint8(G(z, None, 1.0, 1 - wanted))[:, 0].numpy()
    assert (saved == same).all()  # generated with its own row's labels
    assert not (saved == other).all()  # and the labels change the image

    both = tmp_path / "both"
    assert main(["synth", "--run", str(conditional_run), "--n", "40", "--out", str(both)]) == 0
    rows = pd.read_csv(both / "synthetic.csv")
    assert ((rows[CLASSES] > 0.5).any(axis=1)).all()
    assert rows["Fracture"].max() == 1 and rows["Lung Lesion"].max() == 1


def test_conditional_bad_inputs(conditional_run, phantom_root, tmp_path, capsys):
    code = main(["synth", "--run", str(conditional_run), "--n", "4", "--class", "Cardiomegaly"])
    assert code == 2 and "not 'Cardiomegaly'" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"classes": CLASSES}}))
    check_same_classes(run, CLASSES)
    with pytest.raises(RareganError, match="started for classes"):
        check_same_classes(run, ["Fracture"])
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"gan": {**TINY["gan"], "min_images": 10_000}}))
    code = main(["gan", "--data", str(phantom_root), "--class", "Fracture", "Lung Lesion",
                 "--config", str(cfg), "--cache", str(tmp_path / "s"), "--runs", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs at least 10000" in err and "Fracture" in err


def test_class_repeats_draw_classes_in_proportion_to_n_to_the_1_minus_balance():
    from pipelines.gan.data_order import class_repeats

    # 40 images of A alone, 8 of B alone, 2 of both (they count for B, the rarer): n = 42 and 10
    labels = np.array([[1, 0]] * 40 + [[0, 1]] * 8 + [[1, 1]] * 2, dtype=np.float32)
    assert class_repeats(labels, 0.0) is None  # each image once: the plain pass
    full = class_repeats(labels, 1.0)  # 42 / 10 = 4.2 → 4 copies of every B image
    assert (full[:40] == 1).all() and (full[40:] == 4).all()
    drawn = (labels * full[:, None]).sum(axis=0)
    assert abs(drawn[1] / drawn[0] - 1) < 0.25  # about equally often (was 10 : 42)
    half = class_repeats(labels, 0.5)  # sqrt(4.2) = 2.05 → 2
    assert (half[40:] == 2).all() and (half[:40] == 1).all()
    assert (class_repeats(labels[:, :1], 1.0) == 1).all()  # one class: nothing to balance


def test_balanced_sampler_repeats_items_keeps_the_plain_order_and_resumes():
    from pipelines.gan.data_order import ResumableSampler

    plain = ResumableSampler(6, batch=4, seed=3)
    ones = ResumableSampler(6, batch=4, seed=3, repeats=np.ones(6, dtype=int))
    assert [ones.order(e) for e in range(3)] == [plain.order(e) for e in range(3)]
    repeats = np.array([1, 1, 1, 1, 3, 3])
    sampler = ResumableSampler(6, batch=4, seed=3, repeats=repeats)
    assert (
        sampler.n == 10 and np.bincount(sampler.order(0), minlength=6).tolist() == [1] * 4 + [3] * 2
    )
    it = iter(sampler)
    stream = [next(it) for _ in range(30)]
    resumed = ResumableSampler(6, batch=4, seed=3, repeats=repeats)
    resumed.load_state(sampler.state(12))
    it = iter(resumed)
    assert [next(it) for _ in range(12)] == stream[12:24]


def test_a_balanced_conditional_gan_sees_the_classes_equally_and_says_so(tmp_path, monkeypatch):
    from pipelines.data.phantoms import write_phantoms
    from pipelines.gan import run as gan_run

    seen, real_loader = [], gan_run.loader

    class Drawn(Exception):
        pass

    def spy(images, batch, seed, labels=None, repeats=None):  # the real loader's first draws
        it = iter(real_loader(images, batch, seed, labels, repeats))
        seen.extend(next(it)[1] for _ in range(40))
        raise Drawn  # enough seen: no need to train

    monkeypatch.setattr(gan_run, "loader", spy)
    cfg = load_config("cpu-demo", TINY)
    prevalence = {"Fracture": 0.3, "Lung Lesion": 0.06}
    root = write_phantoms(tmp_path / "p", n=300, size=32, seed=0, prevalence=prevalence)
    prepared = prepare(DataSpec(root, size=16, cache_dir=tmp_path), progress=False)
    _, _, labels = training_images(prepared, CLASSES, 100, cfg)
    counts = labels.sum(axis=0)
    assert counts.max() / counts.min() > 3  # one class is rare
    rare = int(counts.argmin())
    shares = {}
    for balance in (0.0, 1.0):
        seen.clear()
        c = {**cfg, "gan": {**cfg["gan"], "class_balance": balance}}
        run = tmp_path / f"b{balance}"
        with pytest.raises(Drawn):
            gan_run.train_gan(prepared, CLASSES, 100, c, run)
        drawn = torch.cat(seen).sum(dim=0)
        shares[balance] = float(drawn[rare] / drawn.sum())
        settings = json.loads((run / "fingerprint.json").read_text())["settings"]
        assert ("gan.class_balance" in settings) == (balance > 0)
    natural = counts[rare] / counts.sum()
    assert abs(shares[0.0] - natural) < 0.08  # drawn in the data's proportions
    assert abs(shares[1.0] - 0.5) < 0.08  # about half the draws: the rare class caught up
    # one class: class_balance is moot and leaves the fingerprint as it was
    one = gan_run.gan_fingerprint(
        prepared, c, ["Fracture"], 100, prepared.positives("Fracture", 100, 0)
    )
    assert "gan.class_balance" not in one["settings"]


def test_unconditional_gan_pools_its_classes_as_a_transfer_source(phantom_root, tmp_path, capsys):
    """`--unconditional`: one GAN of both classes' images without labels (a transfer source): it
    says so in its summary and fingerprint, gan-eval measures its classes together only, it cannot
    draw one of them, its samples' labels are unknown, and a one-class GAN fine-tunes from it."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    common = ["--data", str(phantom_root), "--cache", str(tmp_path / "store")]
    gan = ["gan", *common, "--config", str(cfg), "--no-progress", "--resplit"]
    gan += ["--val", "0.25", "--test", "0.25"]  # enough held-out images for the C2ST
    out = tmp_path / "pooled"
    assert main([*gan, "--class", *CLASSES, "--unconditional", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conditional"] is False and summary["classes"] == CLASSES
    assert (
        json.loads((out / "fingerprint.json").read_text())["settings"]["gan.conditional"] is False
    )
    G, _ = load_generator(out)
    assert G.label_dim == 0
    positives = pd.read_csv(out / "positives.csv")
    shows = positives[CLASSES] > 0.5
    assert shows.any(axis=1).all() and shows.any(axis=0).all()  # both classes, each image of one

    assert (
        main(["gan-eval", "--run", str(out), "--n", "40", "--cache", str(tmp_path / "store")]) == 0
    )
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert "per_class" not in report and report["c2st"]["n_per_side"] >= 20
    synth = sorted(out.glob("synth-n*"))[-1]
    rows = pd.read_csv(synth / "synthetic.csv")
    assert rows[CLASSES].isna().all().all()  # which of its classes an image shows: unknown
    capsys.readouterr()
    assert main(["synth", "--run", str(out), "--n", "4", "--class", "Fracture"]) == 2
    assert "learned Fracture, Lung Lesion pooled, without labels" in capsys.readouterr().err
    assert main(["synth", "--run", str(out), "--n", "4", "--label-rows", "copy_real"]) == 2
    assert "cannot take a real positive's label row (copy_real)" in capsys.readouterr().err

    ft = tmp_path / "ft"
    argv = [*gan, "--class", "Fracture", "--init-from", str(out), "--out", str(ft)]
    assert main(argv) == 0
    assert json.loads((ft / "summary.json").read_text())["init_from"] == str(out)
    # where a GAN of several classes must label its images, pooling is refused
    capsys.readouterr()
    unconditional = tmp_path / "unconditional.yaml"
    unconditional.write_text(yaml.safe_dump({**TINY, "gan": {**TINY["gan"], "conditional": False}}))
    compare = ["compare", *common, "--config", str(unconditional), "--classes", "Fracture"]
    assert main([*compare, "--set", "compare.condition_on=[Lung Lesion]", "--list-cells"]) == 2
    assert "gan.conditional false pools a GAN's classes" in capsys.readouterr().err

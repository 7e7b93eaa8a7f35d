"""GAN runs on disk: train on phantom positives, synthesize, evaluate, options, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import gan_argv, tiny_config
from PIL import Image

from pipelines.cli import main


def test_run_writes_everything_and_schedule_completes(finished_run):
    run = finished_run
    for name in (
        "DONE",
        "config.yaml",
        "positives.csv",
        "generator_ema.pt",
        "summary.json",
        "loss_curve.png",
        "samples/final.png",
        "losses.csv",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    # 3 levels → 5 phases (4 px stable, then fade+stable at 8 and 16 px) of 100 images each
    assert summary["kimg"] == pytest.approx(0.5, abs=0.01)
    phases = sorted(p.name for p in (run / "samples").glob("phase*.png"))
    assert phases == [f"phase{i:02d}.png" for i in range(5)]
    assert Image.open(run / "samples/final.png").mode == "L"  # grayscale natively
    positives = pd.read_csv(run / "positives.csv")
    assert (positives["Fracture"] == 1).all() and summary["training_images"] == 4 * len(positives)
    losses = pd.read_csv(run / "losses.csv")
    assert losses["level"].is_monotonic_increasing and losses["kimg"].is_monotonic_increasing


def test_synth_rows_are_labeled_train_only_and_deterministic(finished_run, tmp_path, capsys):
    for name in ("a", "b"):  # the same seed twice
        argv = [
            "synth",
            "--run",
            str(finished_run),
            "--n",
            "12",
            "--seed",
            "3",
            "--out",
            str(tmp_path / name),
            "--label-rows",
            "copy_real",
        ]
        assert main(argv) == 0
    rows = pd.read_csv(tmp_path / "a" / "synthetic.csv")
    assert len(rows) == 12 and rows["synthetic"].all() and (rows["orig_split"] == "train").all()
    assert (rows["view"] == "frontal").all() and (rows["Fracture"] == 1).all()
    positives = pd.read_csv(finished_run / "positives.csv").set_index("image_id")
    # each synthetic row's label vector is a real positive's row
    for _, row in rows.iterrows():
        src = positives.loc[row["label_source_image_id"]]
        assert all(
            row[c] == src[c] or (np.isnan(row[c]) and np.isnan(src[c]))
            for c in ("Fracture", "Lung Lesion")
        )
    a = np.asarray(Image.open(tmp_path / "a" / "images" / "synth_000000.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "images" / "synth_000000.png"))
    assert a.shape == (16, 16) and (a == b).all()


def test_synthetic_rows_say_only_what_the_gan_knows(finished_run, tmp_path):
    assert (
        main(["synth", "--run", str(finished_run), "--n", "12", "--out", str(tmp_path / "s")]) == 0
    )
    rows = pd.read_csv(tmp_path / "s" / "synthetic.csv")
    assert (rows["Fracture"] == 1).all()
    others = [c for c in pd.read_csv(finished_run / "positives.csv").columns[3:] if c != "Fracture"]
    assert others and rows[others].isna().all().all(), (
        "a Fracture GAN knows nothing of other labels"
    )


def test_a_synthetic_set_moved_with_its_run_still_loads_and_a_lost_image_is_named(
    finished_run, tmp_path
):
    """Sets record absolute image paths; a runs/ folder moved to another place or machine (the
    sweep's records travel, GAN runs may too) must not turn gan-eval or a gan arm into a traceback."""
    import shutil

    from pipelines.data.synthetic import load_synthetic
    from pipelines.errors import RareganError

    made = tmp_path / "made"
    assert main(["synth", "--run", str(finished_run), "--n", "6", "--out", str(made)]) == 0
    labels = list(pd.read_csv(finished_run / "positives.csv").columns[3:])
    rows, images = load_synthetic(made, labels)
    moved = tmp_path / "elsewhere" / "set"
    shutil.move(made, moved)
    rows_moved, images_moved = load_synthetic(moved, labels)
    assert images_moved.shape == (6, 1, 16, 16) and (images_moved == images).all()
    assert rows_moved.equals(rows)
    (moved / "images" / "synth_000003.png").unlink()
    with pytest.raises(RareganError, match="synth_000003.png is missing"):
        load_synthetic(moved, labels)


def test_gan_eval_writes_report(finished_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "gan-eval",
                "--run",
                str(finished_run),
                "--n",
                "24",
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "store"),
                "--no-heldout",  # these phantoms hold too few val/test Fracture positives for it
            ]
        )
        == 0
    )
    report = json.loads((out / "eval.json").read_text())
    assert report["fid"] >= 0 and "kid" in report and report["n_fake"] == 24
    assert report["c2st"] is None and "--no-heldout" in report["heldout"]["skipped"]
    positives = pd.read_csv(finished_run / "positives.csv")
    heldout = pd.read_csv(finished_run / "heldout.csv")  # the positives the GAN never saw
    assert list(heldout.columns) == list(positives.columns) and (heldout["Fracture"] == 1).all()
    assert not set(heldout["patient"]) & set(positives["patient"])
    # the real side is what the GAN saw: its positives after the filter bank (original + 3 filters)
    assert report["n_real"] == 4 * len(pd.read_csv(finished_run / "positives.csv"))
    nearest = pd.read_csv(out / "nearest.csv")
    assert len(nearest) == 24 and {"pixel_rms", "near_copy"} <= set(nearest.columns)
    assert (out / "closest_pairs.png").is_file() and (out / "real_vs_synthetic.png").is_file()


def test_bad_inputs(phantom_root, tmp_path, capsys, finished_run):
    cfg = tiny_config(tmp_path)

    def run(*a):
        return main(gan_argv(phantom_root, tmp_path, tmp_path / "x", *a)), capsys.readouterr().err

    code, err = run(cfg, "--fraction", "1")
    assert code == 2 and "needs at least 8" in err and "Fracture" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan:\n  resolution: 24\n  channels: [8, 8, 8]\n")
    code, err = run(bad, "--size", "24")
    assert code == 2 and "not a power of two" in err and "24" in err
    bad.write_text("gan:\n  resolutoin: 16\n")
    code, err = run(bad)
    assert code == 2 and "resolutoin" in err
    code, err = run(cfg, "--resume")
    assert code == 2 and "no checkpoint" in err
    assert not (tmp_path / "x").exists(), "a refused run leaves no folder behind"
    # an interrupted run of the same settings (the finished one, less DONE) with a damaged checkpoint
    shutil.copytree(finished_run, tmp_path / "x", ignore=shutil.ignore_patterns("DONE"))
    (tmp_path / "x" / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "x" / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    code, err = run(tiny_config(tmp_path, kimg=0.1, every=0.1), "--resume")
    assert code == 2 and "corrupt" in err, err


def test_no_progress_prints_a_line_per_phase_and_checkpoints_by_default(phantom_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path, kimg=0.1, every=4.0)  # 4 kimg alone would never checkpoint 0.5 kimg
    argv = [sys.executable, "-m", "pipelines", *gan_argv(phantom_root, tmp_path, out, cfg)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("phase ")]
    assert len(lines) == 5, proc.stdout
    assert lines[0].startswith("phase 1/5 stable 4 px: kimg 0.00-0.10, d_loss ")
    assert lines[-1].startswith("phase 5/5 stable 16 px: kimg 0.40-0.50, d_loss ")
    assert "g_loss" in lines[-1]
    shown = proc.stdout + proc.stderr
    for noise in ("Tip", "litlogger", "Warning", "deprecated", "Epoch", "srun"):
        assert noise not in shown, shown
    # by default a fifth of the schedule: checkpoints (with a grid each) at 0.1, 0.2, 0.3, 0.4 kimg
    assert len(list((out / "samples").glob("kimg*.png"))) == 4


def test_progress_bar_shows_the_schedule(phantom_root, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path, kimg=0.02, every=1.0)
    argv = gan_argv(phantom_root, tmp_path, out, cfg, "--checkpoint-every", "0.04")
    assert main([a for a in argv if a != "--no-progress"]) == 0
    # the option wins over the config and the default (a fifth of 0.1 kimg)
    assert sorted(p.name for p in (out / "samples").glob("kimg*.png")) == [
        "kimg00000.04.png",
        "kimg00000.08.png",
    ]
    shown = capsys.readouterr()
    bar = shown.out + shown.err
    assert "/0.10 kimg" in bar and "phase 5/5 stable 16 px" in bar and "alpha" in bar
    assert "phase 2/5 fade 8 px" in bar and "d_loss" in bar and "<" in bar  # ETA
    assert "Epoch" not in bar and "/200" not in bar


def test_no_filters_trains_on_the_positives_alone(phantom_root, tmp_path):
    """The gan_nofilter arm's GAN by hand: its own folder, originals only, its own fingerprint."""
    cfg = tiny_config(tmp_path, kimg=0.02, every=0.02)
    argv = gan_argv(phantom_root, tmp_path, tmp_path / "unused", cfg, "--no-filters")
    argv = [a for a in argv if a not in ("--out", str(tmp_path / "unused"))]
    assert main([*argv, "--runs", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs" / "phantoms" / "gan").glob("*-nofilter")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training_images"] == summary["positives"]
    settings = json.loads((run / "fingerprint.json").read_text())["settings"]
    assert settings["filters.names"] == []


def test_augment_settings_change_the_fingerprint_only_when_they_augment():
    """Augmentation off (the default) and fp32 keep the fingerprints runs had before these
    settings existed; any augmenting setting, or bf16, makes another GAN."""
    from types import SimpleNamespace

    from pipelines.config import load_config
    from pipelines.errors import RareganError
    from pipelines.gan.run import gan_fingerprint

    prepared = SimpleNamespace(data_id="d", store=SimpleNamespace(pixel_key="p"))
    rows = pd.DataFrame({"image_id": ["a", "b"]})

    def fp(augment: dict | None = None, precision: str = "32", **gan) -> dict:
        over = {"gan": {**gan, **({"augment": augment} if augment else {})}}
        return gan_fingerprint(prepared, load_config(None, over), ["X"], 100.0, rows, precision)

    base = fp()
    settings = base["settings"]
    assert not [
        k for k in settings if k.startswith(("gan.augment", "gan.precision", "gan.resample"))
    ]
    assert fp(resample="nearest")["id"] == base["id"]
    assert fp(resample="lowpass")["settings"]["gan.resample"] == "lowpass"
    assert fp({"policy": "cutout,translation", "p": 0.0})["id"] == base["id"]  # p 0: identity
    with pytest.raises(RareganError, match="needs gan.augment.policy"):  # adaptive, no policy
        fp({"policy": "", "adaptive": True})
    on = fp({"policy": "cutout,translation", "p": 0.3})
    assert on["id"] != base["id"] and on["settings"]["gan.augment.p"] == 0.3
    assert on["settings"]["gan.augment.policy"] == "translation,cutout"  # order-free
    assert fp({"policy": "translation,cutout", "p": 0.3})["id"] == on["id"]
    ids = {
        fp({"policy": "translation,cutout", "p": 0.4})["id"],
        fp({"policy": "translation", "p": 0.3})["id"],
        fp({"policy": "translation,cutout", "p": 0.3, "adaptive": True})["id"],
        fp({"policy": "translation,cutout", "p": 0.3, "target": 0.7})["id"],
        fp(precision="bf16")["id"],
        fp(resample="lowpass")["id"],
    }
    assert len(ids) == 6 and on["id"] not in ids and base["id"] not in ids


def test_gan_precision_bf16_only_where_native_and_wired_into_the_module(monkeypatch, capsys):
    from pipelines import machine
    from pipelines.config import load_config
    from pipelines.gan.run import gan_module, gan_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "cpu_bf16", lambda: False)  # as on this machine's CPU
    assert gan_precision("cpu", "auto") == "32" and not capsys.readouterr().err
    assert gan_precision("auto", "bf16") == "32"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raregan: warning: gan.precision bf16"), err
    assert "no native bf16" in err[0] and "fp32" in err[0]
    monkeypatch.setattr(machine, "cpu_bf16", lambda: True)
    assert gan_precision("cpu", "auto") == "bf16" == gan_precision("cpu", "bf16")
    assert gan_precision("cpu", "32") == "32"
    over = {"gan": {"resolution": 16, "channels": [16, 16, 8], "latent_dim": 16, "precision": "32",
                    "augment": {"policy": "cutout, color", "p": 0.2, "adaptive": True}}}  # fmt: skip
    module = gan_module(load_config(None, over))
    hp = module.hparams
    assert hp.precision == "32" and hp.augment_policy == "color,cutout" and module.ada.p == 0.2
    assert gan_module(load_config(None, over), precision="bf16").hparams.precision == "bf16"


def test_gan_cli_augment_sets_p_logs_it_and_plots_it(phantom_root, tmp_path):
    """--augment alone: p 0.5; --augment-p adaptive: p moves; aug_p in losses.csv and the curve."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path, kimg=0.02, every=1.0)
    argv = gan_argv(phantom_root, tmp_path, out, cfg, "--augment", "translation,cutout")
    assert main([*argv, "--augment-p", "adaptive"]) == 0
    settings = json.loads((out / "fingerprint.json").read_text())["settings"]
    assert settings["gan.augment.policy"] == "translation,cutout"
    assert settings["gan.augment.adaptive"] is True and settings["gan.augment.p"] == 0.0
    losses = pd.read_csv(out / "losses.csv")
    assert "aug_p" in losses and losses["aug_p"].dropna().between(0, 1).all()
    assert (out / "loss_curve.png").is_file()
    fixed = tmp_path / "fixed"
    assert main(gan_argv(phantom_root, tmp_path, fixed, cfg, "--augment", "color")) == 0
    settings = json.loads((fixed / "fingerprint.json").read_text())["settings"]
    assert settings["gan.augment.p"] == 0.5 and settings["gan.augment.adaptive"] is False
    assert (pd.read_csv(fixed / "losses.csv")["aug_p"].dropna() == 0.5).all()


def test_lowpass_gan_trains_and_its_images_come_from_a_lowpass_generator(phantom_root, tmp_path):
    """gan.resample lowpass end to end: in the fingerprint, the module, and the generator that
    synth rebuilds from the run (and from a checkpoint) resamples as it was trained."""
    from pipelines.gan.synth import checkpoint_generator, load_generator

    cfg = tiny_config(tmp_path, kimg=0.02, every=0.02)
    cfg.write_text(cfg.read_text() + "  resample: lowpass\n")
    out = tmp_path / "run"
    assert main(gan_argv(phantom_root, tmp_path, out, cfg)) == 0
    settings = json.loads((out / "fingerprint.json").read_text())["settings"]
    assert settings["gan.resample"] == "lowpass"
    G, _ = load_generator(out)
    assert G.resample == "lowpass" and all(b.resample == "lowpass" for b in G.blocks)
    saved = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    weights = {k[6:]: v for k, v in saved["state_dict"].items() if k.startswith("G_ema.")}
    torch.testing.assert_close(G.state_dict(), weights)
    assert checkpoint_generator(out, "last.ckpt")[0].resample == "lowpass"

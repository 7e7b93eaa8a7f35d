"""The diffusion kind behind the generator interface: it trains (and learns), resumes exactly,
samples deterministically, and the same commands (synth, gan-eval, compare) take its runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli_argv
from PIL import Image

from pipelines.cli import main
from pipelines.errors import RareganError

TINY_DIFFUSION = """
diffusion:
  resolution: 16
  channels: [16, 32]
  attention_levels: [false, true]
  norm_num_groups: 8
  head_channels: 8
  timesteps: 100
  sample_steps: 5
  batch_size: 8
  kimg: {kimg}
  checkpoint_every_kimg: 0.1
  keep_checkpoints: 2
  precision: "32"
"""


def diffusion_config(tmp_path: Path, kimg: float = 0.4) -> Path:
    path = tmp_path / f"diffusion-{kimg}.yaml"
    path.write_text(TINY_DIFFUSION.format(kimg=kimg))
    return path


def diffusion_argv(phantom_root, tmp_path, out, kimg=0.4, *extra):
    cfg = diffusion_config(tmp_path, kimg)
    return cli_argv(
        "gan", phantom_root, out, tmp_path, "--class", "Fracture", "--generator", "diffusion",
        "--config", str(cfg), *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def diffusion_run(phantom_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diffusion")
    out = tmp / "run"
    assert main(diffusion_argv(phantom_root, tmp, out, 0.8)) == 0
    return tmp, out


def test_a_diffusion_run_learns_and_leaves_what_every_generator_kind_leaves(diffusion_run):
    _, run = diffusion_run
    for name in ("DONE", "fingerprint.json", "config.yaml", "positives.csv", "heldout.csv"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["generator"] == "diffusion" and summary["steps"] == 100
    assert summary["kimg"] == pytest.approx(0.8) and summary["classes"] == ["Fracture"]
    assert summary["training_images"] == 4 * summary["positives"]  # after the filter bank
    grid = np.asarray(Image.open(run / "samples" / "final.png"))
    assert grid.ndim == 2 and grid.std() > 0
    # a grid of the averaged weights at every checkpoint (every 12 steps of 8 images)
    grids = sorted(p.name for p in (run / "samples").glob("kimg*.png"))
    assert grids == [f"kimg{step * 8 / 1000:08.2f}.png" for step in range(12, 100, 12)]
    assert np.asarray(Image.open(run / "samples" / grids[0])).shape == grid.shape
    losses = pd.read_csv(run / "losses.csv")
    assert losses["loss"].iloc[:3].mean() > losses["loss"].iloc[-3:].mean()  # it learns
    stamped = sorted(p.name for p in (run / "checkpoints").glob("step*.ckpt"))
    assert len(stamped) == 2 and (run / "checkpoints" / "last.ckpt").is_file()  # the last K
    settings = json.loads((run / "fingerprint.json").read_text())["settings"]
    assert (
        settings["generator"] == "diffusion" and "diffusion.checkpoint_every_kimg" not in settings
    )


def test_samples_depend_on_the_seed_alone_not_on_the_batch(diffusion_run):
    from pipelines.generators import load, run_kind

    _, run = diffusion_run
    assert run_kind(run) == "diffusion"
    sampler, summary = load(run)
    assert sampler.resolution == 16 and sampler.label_dim == 0
    sampler.progress = False
    a = sampler.sample(6, seed=3, batch=6)
    b = sampler.sample(6, seed=3, batch=4)
    c = sampler.sample(6, seed=4)
    assert a.dtype == torch.uint8 and a.shape == (6, 1, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_synth_and_gan_eval_take_a_diffusion_run(diffusion_run, capsys):
    tmp, run = diffusion_run
    assert main(["synth", "--run", str(run), "--n", "12", "--sample-seed", "1"]) == 0
    rows = pd.read_csv(run / "synth-n12-s1" / "synthetic.csv")
    assert len(rows) == 12 and (rows["Fracture"] == 1).all() and rows["synthetic"].all()
    argv = ["gan-eval", "--run", str(run), "--n", "32", "--cache", str(tmp / "store")]
    assert main([*argv, "--no-heldout"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["n_synthetic"] == 32 if "n_synthetic" in report else True
    assert (run / "eval" / "closest_pairs.png").is_file()


def test_a_killed_diffusion_run_resumes_to_the_same_weights(phantom_root, tmp_path, diffusion_run):
    _, reference = diffusion_run
    out = tmp_path / "killed"
    argv = diffusion_argv(phantom_root, tmp_path, out, 0.8, "--checkpoint-every", "0.08")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }  # as this process: same sums
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )  # fmt: skip
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "DONE").exists()
    assert main(argv) == 2  # an unfinished run is not silently overwritten
    assert main([*argv, "--resume"]) == 0
    ours = torch.load(out / "generator_ema.pt", weights_only=False)["state_dict"]
    theirs = torch.load(reference / "generator_ema.pt", weights_only=False)["state_dict"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "resumed ≠ uninterrupted"


def test_a_fine_tune_starts_from_its_source_and_bad_settings_are_one_line(
    phantom_root, tmp_path, diffusion_run, capsys
):
    from pipelines.generators import load

    _, source = diffusion_run
    out = tmp_path / "fine"
    argv = diffusion_argv(phantom_root, tmp_path, out, 0.08, "--init-from", str(source))
    assert main(argv) == 0
    settings = json.loads((out / "fingerprint.json").read_text())["settings"]
    assert (
        settings["diffusion.init_from"]
        == json.loads((source / "fingerprint.json").read_text())["id"]
    )
    assert json.loads((out / "summary.json").read_text())["init_from"] == str(source)
    fine, _ = load(out)
    start, _ = load(source)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            fine.unet.state_dict().values(), start.unet.state_dict().values(), strict=True
        )
    ]
    assert any(moved)
    capsys.readouterr()
    for extra, needle in [
        (["--init-from", str(tmp_path)], "is not a finished diffusion run"),
        (["--freeze-d", "1"], "--freeze-d is for the PGGAN"),
        (["--set", "diffusion.attention_levels=[true]"], "attention_levels has 1 entries"),
        (["--set", "diffusion.schedule=wobbly"], "diffusion.schedule"),
    ]:
        code = main([*diffusion_argv(phantom_root, tmp_path, tmp_path / "bad", 0.08), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) >= 1 and needle in err[-1], (extra, err)
    argv = cli_argv("gan", phantom_root, tmp_path / "bad", tmp_path, "--class", "Fracture")
    assert main([*argv, "--set", "generator.kind=vae"]) == 2
    assert "config key 'generator.kind' must be one of pggan, diffusion" in capsys.readouterr().err


def test_a_sweep_runs_the_diffusion_arm_beside_the_gan_arm(phantom_root, tmp_path):
    from test_sweep_cells import TINY, main_output

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + TINY_DIFFUSION.replace("resolution: 16", "resolution: 32").format(kimg=0.08)
                   .replace("diffusion:", "diffusion:\n  min_images: 4", 1))  # fmt: skip
    argv = [
        *["compare", "--data", str(phantom_root), "--classes", "Fracture", "--fractions", "100"],
        *["--arms", "none", "diffusion", "--seeds", "0", "--config", str(cfg), "--name", "dm"],
        *["--runs", str(tmp_path / "runs"), "--cache", str(tmp_path / "store")],
    ]
    code, out, err = main_output([*argv, "--list-cells"])
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0, err
    assert rows == [
        ["0", "pending", "classify-none-f100-s0", "-"],
        ["1", "pending", "gan-Fracture-f100-s0-diffusion", "0"],
        ["2", "pending", "classify-diffusion-f100-s0", "1"],
    ]
    code, out, err = main_output(argv)
    assert code == 0, err
    unit = tmp_path / "runs/phantoms/gan/dm-Fracture-f100-seed0-diffusion"
    assert json.loads((unit / "summary.json").read_text())["generator"] == "diffusion"
    table = pd.read_csv(tmp_path / "runs/phantoms/compare/dm/auc_table.csv")
    assert set(table["arm"]) == {"none", "diffusion"}
    assert main_output([*argv, "--collect"])[0] == 0  # its records are checked like a GAN's


def test_an_exported_diffusion_source_fine_tunes_like_its_run(
    phantom_root, tmp_path, diffusion_run
):
    from pipelines.generators.diffusion import GENERATOR, export_source

    _, source = diffusion_run
    out = export_source(source, tmp_path / "exported")
    assert not (out / "checkpoints").exists() and (out / GENERATOR).is_file()
    assert (out / GENERATOR).read_bytes() == (source / GENERATOR).read_bytes()
    made = json.loads((out / "source.json").read_text())
    assert made["fingerprint"] == json.loads((source / "fingerprint.json").read_text())["id"]
    runs = {}
    for name, start in (("from-run", source), ("from-export", out)):
        argv = diffusion_argv(
            phantom_root, tmp_path, tmp_path / name, 0.08, "--init-from", str(start)
        )
        assert main(argv) == 0
        runs[name] = json.loads((tmp_path / name / "fingerprint.json").read_text())["id"]
    assert runs["from-run"] == runs["from-export"]  # records name the source alike
    a = torch.load(tmp_path / "from-run" / GENERATOR, weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "from-export" / GENERATOR, weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddim_steps_are_spaced_as_monais_step_assumes():
    """MONAI's DDIM step goes back T // S timesteps; the sampled timesteps are spaced alike (MONAI
    1.6's set_timesteps spaces them (T − 1)/(S − 1) apart, off by one or two from the step)."""
    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion import ddim_schedule

    for steps in (50, 64):
        schedule = ddim_schedule(DEFAULTS["diffusion"], steps)
        t = schedule.timesteps.tolist()
        stride = 1000 // steps
        assert (
            len(t) == steps
            and t[-1] == 0
            and all(a - b == stride for a, b in zip(t[:-1], t[1:], strict=True))
        )


def test_every_device_count_trains_on_the_same_draws():
    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion import step_batch

    hp = dict(DEFAULTS["diffusion"], batch_size=8)
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    one = step_batch(images, hp, step=7)
    two = [step_batch(images, hp, 7, rank, 2) for rank in (0, 1)]
    for k in range(3):
        merged = torch.empty_like(one[k])
        merged[0::2], merged[1::2] = two[0][k], two[1][k]
        assert torch.equal(merged, one[k])
    assert not torch.equal(step_batch(images, hp, step=8)[1], one[1])


def test_a_sweeps_pggan_arms_train_pggans_whatever_the_config_names():
    from pipelines.config import load_config
    from pipelines.experiment.plan import cell_config

    cfg = load_config(None, {"generator": {"kind": "diffusion"}})
    assert cell_config(cfg, "gan", 3, "filters")["generator"]["kind"] == "pggan"
    assert cell_config(cfg, "gan", 3, "filters")["gan"]["seed"] == 3
    assert cell_config(cfg, "source", 3, "source")["generator"]["kind"] == "pggan"
    made = cell_config(load_config(None), "gan", 3, "diffusion")
    assert made["generator"]["kind"] == "diffusion" and made["diffusion"]["seed"] == 3


def test_the_ratio_chosen_on_validation_follows_the_metrics_direction(tmp_path):
    from pipelines.experiment.execute import choose_ratio

    assert choose_ratio({0.5: 0.7, 1.0: 0.8, 2.0: 0.8}, "val_auc_studied", tmp_path) == 1.0
    assert choose_ratio({0.5: 0.7, 1.0: 0.8}, "val_loss", tmp_path) == 0.5
    assert choose_ratio({0.5: float("nan"), 1.0: 0.6}, "val_auc", tmp_path) == 1.0
    with pytest.raises(RareganError, match="no ratio"):
        choose_ratio({0.5: None}, "val_auc", tmp_path)


def test_train_minutes_count_the_whole_step_not_only_its_forward_pass(
    phantom_root, tmp_path, monkeypatch
):
    """summary.json's train_minutes: forward, backward, optimizer step and average (the 200-kimg
    source reported 36 of its ~87 minutes when only training_step was timed). A 50 ms average
    update on each of 100 steps must show up as at least 5 s."""
    from pipelines.generators.diffusion.training import Diffusion

    slow = Diffusion.update_average

    def update_average(self):
        time.sleep(0.05)
        slow(self)

    monkeypatch.setattr(Diffusion, "update_average", update_average)
    out = tmp_path / "run"
    assert main(diffusion_argv(phantom_root, tmp_path, out, 0.8)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 100 and summary["train_minutes"] * 60 >= 4.5  # (rounded to 0.01 min)


def test_a_one_class_runs_fingerprint_has_no_conditioning_keys(diffusion_run):
    """The conditioning settings mean nothing to a model of one class: its fingerprint (and the
    committed one-class runs' records) stay as they were before those settings existed."""
    _, run = diffusion_run
    settings = json.loads((run / "fingerprint.json").read_text())["settings"]
    assert not any(k.split(".")[-1] in ("conditional", "p_uncond", "guidance") for k in settings)


def test_guidance_is_refused_for_a_one_class_model(diffusion_run, capsys):
    _, one = diffusion_run
    assert main(["synth", "--run", str(one), "--n", "2", "--guidance", "2"]) == 2
    assert "--guidance is for a class-conditional diffusion model" in capsys.readouterr().err

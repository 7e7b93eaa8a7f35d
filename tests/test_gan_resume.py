"""GAN runs that stop and go on: kill -9 and resume, crash equality, a full disk while checkpointing,
the seeded data order, the newest checkpoints kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import gan_argv, tiny_config
from PIL import Image

from pipelines.cli import main


def test_kill_and_resume_finishes_the_same_schedule(phantom_root, tmp_path, finished_run):
    out = tmp_path / "killed"
    cfg = tiny_config(tmp_path, kimg=0.1, every=0.05)
    argv = [sys.executable, "-m", "pipelines", *gan_argv(phantom_root, tmp_path, out, cfg)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (
            ckpt.exists()
            and torch.load(ckpt, weights_only=False)["pggan_state"]["images_seen"] >= 150
        ):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "DONE").exists()
    seen = torch.load(ckpt, weights_only=False)["pggan_state"]["images_seen"]
    assert 0 < seen < 500
    # without --resume the unfinished run is not silently overwritten
    assert main(gan_argv(phantom_root, tmp_path, out, cfg)) == 2
    assert main(gan_argv(phantom_root, tmp_path, out, cfg, "--resume")) == 0
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((finished_run / "summary.json").read_text())
    assert a["kimg"] == b["kimg"] and a["steps"] == b["steps"]
    assert_same_training_state(out, finished_run)  # killed anywhere, resumed: the same weights
    assert sorted(p.name for p in (out / "samples").glob("phase*.png"))[-1] == "phase04.png"
    # the loss history spans the crash: logged before it, and continued after it without gaps or repeats
    losses = pd.read_csv(out / "losses.csv")
    assert len(list((out / "logs").glob("part*"))) == 2
    assert losses["step"].is_unique and losses["kimg"].is_monotonic_increasing
    assert losses["kimg"].min() < seen / 1000 < losses["kimg"].max()


def test_out_of_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    from pipelines.errors import RareganError
    from pipelines.runs import save_checkpoint_atomic

    class FullDisk:  # stands in for Lightning's Trainer: writes half a file, then the disk is full
        is_global_zero = True

        def save_checkpoint(self, path):
            with open(path, "wb") as fh:
                fh.write(b"half")
            raise OSError(28, "No space left on device")

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"previous checkpoint")
    with pytest.raises(
        RareganError, match="No space left on device.*previous checkpoint .* is kept"
    ):
        save_checkpoint_atomic(FullDisk(), ckpt)
    assert ckpt.read_bytes() == b"previous checkpoint"
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]


def assert_same_training_state(run, reference):
    """The EMA generator file, and the final checkpoints' G, D and EMA weights, optimizer moments
    and schedule position of two runs are equal."""
    ema_a, ema_b = (torch.load(r / "generator_ema.pt")["state_dict"] for r in (run, reference))
    differ = [k for k in ema_b if not torch.equal(ema_a[k], ema_b[k])]
    assert not differ, f"{len(differ)} of {len(ema_b)} EMA generator tensors differ"
    a, b = (
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=False) for r in (run, reference)
    )
    # the schedule position is equal; wall-clock training time is not a training state
    state_a, state_b = (
        {k: v for k, v in c["pggan_state"].items() if k != "train_seconds"} for c in (a, b)
    )
    assert state_a == state_b and "images_seen" in state_b
    assert a["pggan_state"]["train_seconds"] > 0
    keys = list(b["state_dict"])
    assert any(k.startswith("G.") for k in keys) and any(k.startswith("G_ema.") for k in keys)
    differ = [k for k in keys if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} of {len(keys)} tensors differ, e.g. {differ[:3]}"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for key, state in opt_b["state"].items():
            assert all(torch.equal(state[m], opt_a["state"][key][m]) for m in state)


def synth_pixels(run, out):
    """A few synthetic images of a finished run, stacked."""
    assert main(["synth", "--run", str(run), "--n", "8", "--seed", "1", "--out", str(out)]) == 0
    return np.stack([np.asarray(Image.open(p)) for p in sorted((out / "images").glob("*.png"))])


def test_resume_after_a_crash_equals_the_uninterrupted_run(
    phantom_root, tmp_path, finished_run, monkeypatch
):
    from pipelines.gan import outputs

    save = outputs.save_checkpoint_atomic

    def save_then_crash(trainer, path):
        save(trainer, path)
        raise RuntimeError("crashed after the first checkpoint")

    out = tmp_path / "crashed"
    cfg = tiny_config(tmp_path, kimg=0.1, every=0.15)  # finished_run's settings, but the interval
    monkeypatch.setattr(outputs, "save_checkpoint_atomic", save_then_crash)
    with pytest.raises(RuntimeError, match="crashed"):
        main(gan_argv(phantom_root, tmp_path, out, cfg, "--checkpoint-every", "0.15"))
    monkeypatch.undo()
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    # mid-phase (the 8 px fade is 100-200 images), past the first pass over the training images
    assert state["pggan_state"]["images_seen"] == 152
    assert state["data_order"]["epoch"] >= 1 and state["data_order"]["index"] > 0
    assert main(gan_argv(phantom_root, tmp_path, out, cfg, "--resume")) == 0
    assert_same_training_state(out, finished_run)
    assert (synth_pixels(out, tmp_path / "a") == synth_pixels(finished_run, tmp_path / "b")).all()


def test_sampler_passes_are_seeded_ranks_get_disjoint_slices_and_resume_continues(monkeypatch):
    from pipelines.gan import data_order

    def take(sampler, k):
        it = iter(sampler)
        return [next(it) for _ in range(k)]

    sampler = data_order.ResumableSampler(10, batch=4, seed=3)
    stream = take(sampler, 40)
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20] and stream[:10] == sampler.order(0)
    # resumed at a saved position: the same stream from there on
    resumed = data_order.ResumableSampler(10, batch=4, seed=3)
    resumed.load_state(sampler.state(12))
    assert resumed.state(12) == {"epoch": 1, "index": 2} and take(resumed, 20) == stream[12:32]
    # two ranks: rank r takes the r-th batch of each pair, so together they read the one stream
    monkeypatch.setattr(data_order, "rank_and_world", lambda: (1, 2))
    assert take(sampler, 8) == stream[4:8] + stream[12:16]


def test_gan_keeps_only_the_newest_stamped_checkpoints(phantom_root, tmp_path):
    """Every periodic checkpoint is last.ckpt plus a kimg-stamped link; only gan.keep_checkpoints
    of those stay, the newest, each a loadable checkpoint."""
    cfg = tiny_config(tmp_path, kimg=0.04, every=0.016)
    cfg.write_text(cfg.read_text() + "  keep_checkpoints: 2\n")
    out = tmp_path / "run"
    assert main(gan_argv(phantom_root, tmp_path, out, cfg)) == 0
    stamped = sorted((out / "checkpoints").glob("kimg*.ckpt"))
    assert [p.name for p in stamped] == ["kimg000000.176.ckpt", "kimg000000.192.ckpt"]  # of 12
    for path in stamped:
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["pggan_state"]["images_seen"] == round(float(path.stem[4:]) * 1000)
    assert (out / "checkpoints" / "last.ckpt").is_file()

"""What a scheduler sees: SIGTERM (a Slurm time limit or preemption) ends a run with one line and
exit 143, Ctrl-C with `raregan: interrupted` and exit 130; neither marks anything done, and the
run resumes from its last checkpoint. Real signals, sent to a real `raregan` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_argv, gan_argv, tiny_config

from pipelines.cli import main


def start(argv: list) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipelines", *map(str, argv)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_when(proc: subprocess.Popen, ready: Path, signum: int, timeout: float = 240) -> str:
    """Send `signum` once `ready` exists (the run is training); the process's stderr."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready.exists():
        time.sleep(0.1)
    assert proc.poll() is None, f"ended before the signal: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return err


def last_line(err: str) -> str:
    return [line for line in err.strip().splitlines() if line.strip()][-1]


@pytest.mark.parametrize(
    "signum, code, words",
    [(signal.SIGTERM, 143, "raregan: terminated (SIGTERM)"), (signal.SIGINT, 130, "raregan: interrupted")],
)  # fmt: skip
def test_gan_stopped_by_a_signal_says_so_marks_nothing_done_and_resumes(
    signum, code, words, phantom_root, tmp_path
):
    out = tmp_path / "gan"
    cfg = tiny_config(tmp_path, kimg=0.1, every=0.05)
    proc = start(gan_argv(phantom_root, tmp_path, out, cfg))
    err = signal_when(proc, out / "checkpoints" / "last.ckpt", signum)
    assert proc.returncode == code, err[-2000:]
    assert last_line(err).startswith(words), err[-2000:]
    assert not (out / "DONE").exists() and (out / "checkpoints" / "last.ckpt").is_file()
    assert main(gan_argv(phantom_root, tmp_path, out, cfg, "--resume")) == 0
    assert json.loads((out / "summary.json").read_text())["kimg"] > 0


def test_classifier_terminated_exits_143_without_done(phantom_root, tmp_path):
    out = tmp_path / "clf"
    argv = cli_argv("classify", phantom_root, out, tmp_path, "--model", "cnn5", "--size", "16")
    proc = start([*argv, "--epochs", "200"])
    err = signal_when(proc, out / "checkpoints" / "last.ckpt", signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert last_line(err).startswith("raregan: terminated (SIGTERM)")
    assert not (out / "DONE").exists()


def test_a_sweep_cell_terminated_exits_143_and_leaves_no_record(phantom_root, tmp_path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text("classify: {model: cnn5, epochs: 200, batch_size: 32}\n")
    argv = ["compare", "--data", phantom_root, "--classes", "Fracture", "--fractions", "100"]
    argv += ["--arms", "none", "--seeds", "0", "--config", cfg, "--runs", tmp_path / "runs"]
    argv += ["--cache", tmp_path / "store", "--cell", "0"]
    proc = start(argv)
    run = tmp_path / "runs" / "phantoms" / "classify" / "sweep-cnn5-none-f100-s0"
    err = signal_when(proc, run / "checkpoints" / "last.ckpt", signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert last_line(err).startswith("raregan: terminated (SIGTERM)")
    assert not (run / "DONE").exists() and not (run / "ERROR").exists()
    records = tmp_path / "runs" / "phantoms" / "compare" / "sweep" / "cells"
    assert not records.exists() or not any(records.iterdir())

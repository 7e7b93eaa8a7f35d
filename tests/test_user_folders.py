"""raregan never deletes what it did not write: --redo removes a run's own files only, and output
folders that would put a user's home, the repository or the data at risk are refused.

Every command here writes only under pytest's tmp folders, even on code that has the bug: the home
folder and the repository's root are stand-ins (monkeypatched), and `/` is checked without a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import cli_argv, gan_argv, tiny_config
from test_bad_inputs import assert_one_line_error, run_cli, snapshot

from pipelines.commands import common
from pipelines.errors import RareganError
from pipelines.fingerprints import (
    FINGERPRINT,
    check_fingerprint,
    fingerprint,
    open_run,
    raregan_entries,
)


def user_folder(path: Path) -> dict[str, bytes]:
    """A user's folder with a file and a subfolder holding a file; its contents."""
    (path / "chapter").mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "chapter" / "figure.png").write_bytes(b"\x89PNG not really")
    return snapshot(path)


@pytest.fixture(scope="module")
def own_phantoms(tmp_path_factory) -> Path:
    """A small phantom set of this module's own (a test may point --out at it)."""
    from pipelines.data.phantoms import write_phantoms

    return write_phantoms(tmp_path_factory.mktemp("runs") / "phantoms", n=120, size=32, seed=0)


def test_redo_never_deletes_a_folder_without_a_fingerprint(tmp_path):
    mine = tmp_path / "mine"
    before = user_folder(mine)
    for redo in (False, True):
        with pytest.raises(RareganError, match="raregan did not make"):
            check_fingerprint(mine, fingerprint(a=1), redo=redo)
        assert snapshot(mine) == before


def test_redo_removes_only_what_raregan_wrote_in_its_own_run(tmp_path, capsys):
    run = tmp_path / "run"
    open_run(run, fingerprint(a=1), {"a": 1})
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "DONE").write_text("{}")
    (run / "my-notes.txt").write_text("keep me")
    assert check_fingerprint(run, fingerprint(a=2), redo=True) is False
    assert sorted(p.name for p in run.iterdir()) == ["my-notes.txt"]
    assert "kept 1 entries raregan did not write" in capsys.readouterr().out
    # without a user's file the emptied run folder goes too
    open_run(run / "sub", fingerprint(a=1), {"a": 1})
    assert check_fingerprint(run / "sub", fingerprint(a=2), redo=True) is False
    assert not (run / "sub").exists()


def test_every_file_of_a_finished_gan_and_classifier_run_is_known_to_redo(
    finished_run, phantom_run
):
    """RUN_ENTRIES lists what runs write: an output added without listing it fails here."""
    for run in (finished_run, phantom_run):
        mine, others = raregan_entries(run)
        assert others == [], (
            f"{run}: {[p.name for p in others]} missing from fingerprints.RUN_ENTRIES"
        )
        assert run / FINGERPRINT in mine


# argv of each command writing into `out` (ctx: phantoms, a finished GAN and classifier run)
COMMANDS = {
    "gan": lambda ctx, out: gan_argv(ctx["phantoms"], ctx["tmp"], out, ctx["cfg"]),
    "classify": lambda ctx, out: [
        *cli_argv("classify", ctx["phantoms"], out, ctx["tmp"]),
        *("--model", "cnn5", "--epochs", "1", "--size", "16"),
    ],
    "synth": lambda ctx, out: ["synth", "--run", ctx["gan"], "--n", "4", "--out", out],
    "filters": lambda ctx, out: [
        *("filters", "--data", ctx["phantoms"], "--class", "Fracture"),
        *("--cache", ctx["tmp"] / "store", "--out", out),
    ],
    "gan-eval": lambda ctx, out: ["gan-eval", "--run", ctx["gan"], "--n", "8", "--out", out],
    "evaluate": lambda ctx, out: [
        *("evaluate", "--run", ctx["clf"], "--data", ctx["phantoms"], "--allow-overlap"),
        *("--cache", ctx["tmp"] / "store", "--out", out),
    ],
}
ACCEPTS_REDO = ("classify", "gan", "synth")


@pytest.mark.parametrize(
    "command, redo", [(c, False) for c in sorted(COMMANDS)] + [(c, True) for c in ACCEPTS_REDO]
)
def test_a_users_folder_survives_every_command(
    command, redo, capsys, tmp_path, phantom_root, finished_run, phantom_run
):
    ctx = {"phantoms": phantom_root, "gan": finished_run, "clf": phantom_run, "tmp": tmp_path}
    ctx["cfg"] = tiny_config(tmp_path, kimg=0.02, every=0.02)
    mine = tmp_path / "mine"
    before = user_folder(mine)
    argv = [*COMMANDS[command](ctx, mine), *(["--redo"] if redo else [])]
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, str(mine))
    assert snapshot(mine) == before


def test_a_users_folder_survives_compare_with_redo(capsys, tmp_path, phantom_root):
    """compare with --redo: the user's files in its --runs root survive, and a user's folder where
    a cell's run would go stops the sweep with one line; nothing is written into it."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("classify: {model: cnn5, epochs: 1, batch_size: 64}\ncompare: {n_boot: 50}\n")
    runs = tmp_path / "runs"
    top = user_folder(runs)
    taken = runs / "phantoms" / "classify" / "sweep-cnn5-none-f100-s0"
    inside = user_folder(taken)
    argv = ["compare", "--data", phantom_root, "--classes", "Fracture", "--fractions", "100"]
    argv += ["--arms", "none", "--seeds", "0", "--config", cfg, "--runs", runs, "--redo"]
    code, err = run_cli(capsys, *argv, "--cache", tmp_path / "store")
    assert_one_line_error(code, err, str(taken), "raregan did not make")
    assert snapshot(taken) == inside
    assert {k: v for k, v in snapshot(runs).items() if k in top} == top


@pytest.mark.parametrize("place", ["home", "repo", "data", "inside-data", "holding-data"])
def test_out_that_would_put_home_repo_or_data_at_risk_is_refused(
    place, capsys, tmp_path, own_phantoms, monkeypatch
):
    home, repo = tmp_path / "home", tmp_path / "repo"
    before = {"home": user_folder(home), "repo": user_folder(repo)}
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(common, "REPO_ROOT", repo)
    out = {
        "home": home,
        "repo": repo,
        "data": own_phantoms,
        "inside-data": own_phantoms / "train",
        "holding-data": own_phantoms.parent,
    }[place]
    data_before = snapshot(own_phantoms)
    argv = cli_argv("classify", own_phantoms, out, tmp_path, "--model", "cnn5", "--redo")
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, f"--out {out}", "choose a folder of its own")
    assert snapshot(own_phantoms) == data_before
    assert {"home": snapshot(home), "repo": snapshot(repo)} == before


def test_the_file_systems_root_is_refused_as_any_output_folder():
    for option in ("out", "runs", "results"):
        args = argparse.Namespace(**{option: Path("/")})
        with pytest.raises(RareganError, match=f"--{option} / is the file system's root"):
            common.check_output_places(args)
    common.check_output_places(argparse.Namespace(out=Path("/tmp/x"), runs=Path("runs")))


def test_runs_root_may_hold_the_data_as_the_demo_does(capsys, tmp_path, own_phantoms):
    """The default layout: phantoms in runs/phantoms, run folders beside them under runs/."""
    runs = own_phantoms.parent
    argv = ["classify", "--data", own_phantoms, "--runs", runs, "--size", "16", "--model", "cnn5"]
    argv += ["--epochs", "1", "--no-progress", "--cache", tmp_path / "store"]
    assert run_cli(capsys, *argv)[0] == 0
    made = list(runs.glob(f"*/classify/*/{FINGERPRINT}"))
    assert len(made) == 1 and json.loads(made[0].read_text())["id"]


def test_a_users_folder_given_as_compare_results_keeps_every_file(capsys, tmp_path, phantom_root):
    """`compare --results` at a folder of the user's, run to the end with --redo and collected
    again: the records, tables and report land beside the user's files, none of which is touched."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("classify: {model: cnn5, epochs: 1, batch_size: 64}\ncompare: {n_boot: 50}\n")
    mine = tmp_path / "mine"
    before = user_folder(mine)
    argv = ["compare", "--data", phantom_root, "--classes", "Fracture", "--fractions", "100"]
    argv += ["--arms", "none", "--seeds", "0", "--config", cfg, "--runs", tmp_path / "runs"]
    argv += ["--results", mine, "--cache", tmp_path / "store"]
    for extra in (["--redo"], ["--collect"]):
        code, err = run_cli(capsys, *argv, *extra)
        assert code == 0, err
        after = snapshot(mine)
        assert {k: after.get(k) for k in before} == before
    assert (mine / "cells" / "classify-none-f100-s0.json").is_file()
    assert (mine / "report.html").is_file()

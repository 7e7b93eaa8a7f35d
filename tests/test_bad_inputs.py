"""What a hostile new user tries: each bad input gets one `raregan: error:` line, exit 2, no damage."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from pipelines.cli import main


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Run the CLI in-process; return (exit code, stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and exactly one `raregan: error:` line holding every needle."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("raregan: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def make_user_path(tmp_path, kind: str):
    """A user's own file, or folder with a file in it, at the path an --out will name."""
    path = tmp_path / "mine"
    if kind == "file":
        path.write_text("my notes")
        return path, {"": b"my notes"}
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    return path, {"thesis.tex": b"years of work"}


def snapshot(path) -> dict[str, bytes]:
    """Every file under path (or path itself) by relative name."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


OUT_COMMANDS = {
    "filters": lambda ctx, out: [
        "filters",
        "--data",
        ctx["phantoms"],
        "--class",
        "Fracture",
        "--cache",
        ctx["tmp"] / "store",
        "--out",
        out,
    ],
    "synth": lambda ctx, out: ["synth", "--run", ctx["gan"], "--n", "4", "--out", out],
}


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_never_deletes_a_users_file(
    command, kind, capsys, tmp_path, phantom_root, finished_run
):
    ctx = {"phantoms": phantom_root, "gan": finished_run, "tmp": tmp_path}
    path, before = make_user_path(tmp_path, kind)
    code, err = run_cli(capsys, *OUT_COMMANDS[command](ctx, path))
    assert_one_line_error(code, err, str(path), "refusing to replace")
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_replaces_its_own_previous_output_and_follows_the_umask(
    command, capsys, tmp_path, phantom_root, finished_run
):
    import os

    ctx = {"phantoms": phantom_root, "gan": finished_run, "tmp": tmp_path}
    out = tmp_path / "out"
    mask = os.umask(0o022)
    try:
        assert run_cli(capsys, *OUT_COMMANDS[command](ctx, out))[0] == 0
        assert (out / "DONE").is_file() and out.stat().st_mode & 0o777 == 0o755
        other = "synth" if command == "filters" else "filters"
        assert run_cli(capsys, *OUT_COMMANDS[command](ctx, out))[0] == 0  # its own: fine
        code, err = run_cli(capsys, *OUT_COMMANDS[other](ctx, out))  # another command's: refused
        assert_one_line_error(code, err, "refusing to replace")
    finally:
        os.umask(mask)


def test_gan_run_with_other_settings_is_refused_and_names_the_key(
    capsys, tmp_path, phantom_root, finished_run
):
    """A finished (or interrupted) GAN is reused or resumed only under the settings that made it."""
    from conftest import gan_argv, tiny_config

    cfg = tiny_config(tmp_path, kimg=0.2, every=0.1)  # finished_run used kimg 0.1
    before = (finished_run / "DONE").read_bytes()
    for extra in ([], ["--resume"]):
        code, err = run_cli(capsys, *gan_argv(phantom_root, tmp_path, finished_run, cfg, *extra))
        assert_one_line_error(code, err, "gan.kimg_per_phase: 0.1 → 0.2", "--redo")
    assert (finished_run / "DONE").read_bytes() == before


def test_synthetic_set_from_a_gan_that_saw_other_patients_is_refused(
    capsys, tmp_path, phantom_root, finished_run
):
    """The gan arm never gets real positives (through the GAN) that the none arm lacks."""
    from pipelines.generators.synth import synthesize

    synth = synthesize(finished_run, n=4, out=tmp_path / "synth")  # GAN of the 100 % fraction
    argv = ["classify", "--data", phantom_root, "--cache", tmp_path / "store", "--size", "16"]
    argv += ["--fraction", "10", "--arm", "gan", "--synth", synth, "--out", tmp_path / "clf"]
    code, err = run_cli(capsys, *argv, "--model", "cnn5", "--no-progress")
    assert_one_line_error(code, err, str(synth), "outside this classifier's train rows")
    assert not (tmp_path / "clf").exists()


CHEXPERT_ROWS = (
    b"Path,Sex,Age,Frontal/Lateral,AP/PA,Edema,Fracture\n"
    b"CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,\n"
)
GARBLED = {  # source → (file name, bytes): a PNG saved under the CSV's name
    "chexpert": ("train.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))),
    "nih": ("Data_Entry_2017.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))),
}


@pytest.mark.parametrize("source", sorted(GARBLED))
def test_garbled_csv_is_named_on_one_line(source, capsys, tmp_path):
    name, data = GARBLED[source]
    csv = tmp_path / source / name
    csv.parent.mkdir()
    csv.write_bytes(data)
    code, err = run_cli(capsys, "data", "--data", csv.parent, "--cache", tmp_path / "store")
    assert_one_line_error(code, err, str(csv), "line 1 is not UTF-8 text")


def test_chexpert_value_that_is_not_a_number_names_file_and_line(capsys, tmp_path):
    """A Latin-1 no-break space after a value (a spreadsheet export): the file and its line."""
    csv = tmp_path / "train.csv"
    row = b"CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Male,70,Frontal,AP,0.0,1.0\xa0\n"
    csv.write_bytes(CHEXPERT_ROWS + row)
    code, err = run_cli(capsys, "data", "--data", tmp_path, "--cache", tmp_path / "store")
    assert_one_line_error(code, err, str(csv), "line 3")


TRAIN_COMMANDS = {
    "gan": lambda data: ["gan", "--data", data, "--class", "Fracture"],
    "classify": lambda data: ["classify", "--data", data, "--model", "cnn5", "--size", "16"],
}


@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
@pytest.mark.parametrize("command", sorted(TRAIN_COMMANDS))
def test_runs_root_that_is_a_file_is_refused_before_any_work(
    command, under, capsys, tmp_path, phantom_root
):
    mine = tmp_path / "mine"
    mine.write_text("my notes")
    runs = mine / "runs" if under else mine
    argv = TRAIN_COMMANDS[command](phantom_root)
    code, err = run_cli(capsys, *argv, "--runs", runs, "--cache", tmp_path / "store")
    assert_one_line_error(code, err, "--runs", str(runs), f"{mine} is a file")
    assert mine.read_text() == "my notes" and not (tmp_path / "store").exists()


# (command, preset text or None, extra options, what the line must name)
BAD_SETTINGS = {
    "kimg-lots": ("gan", "gan:\n  kimg_per_phase: lots\n", [], ["gan.kimg_per_phase", "'lots'"]),
    "channels-64": ("gan", "gan:\n  channels: 64\n", [], ["gan.channels", "list"]),
    "epochs-three": ("classify", "classify:\n  epochs: three\n", [], ["classify.epochs", "'three'"]),
    "kimg-0": ("gan", None, ["--kimg", "0"], ["--kimg", "> 0"]),
    "kimg-negative": ("gan", None, ["--kimg", "-1"], ["--kimg", "'-1'"]),
    "seed-negative": ("gan", None, ["--seed", "-1"], ["--seed", "'-1'"]),
    "epochs-0": ("classify", None, ["--epochs", "0"], ["--epochs", "> 0"]),
    "gpu-without-gpu": ("gan", None, ["--accelerator", "gpu"], ["--accelerator", "gpu", "cpu"]),
    "strategy-bogus": ("classify", None, ["--strategy", "bogus"], ["--strategy", "'bogus'"]),
    "classify-gan-ratio": ("classify", None, ["--arm", "gan_ratio"], ["gan_ratio", "run it in a sweep"]),
    "classify-gan-pretrain": ("classify", None, ["--arm", "gan_pretrain"], ["gan_pretrain", "the gan arm's classifier", "run it in a sweep"]),
    "augment-policy-flip": ("gan", "gan:\n  augment:\n    policy: translation,flip\n", [], ["gan.augment.policy", "'flip'", "color, affine, translation, cutout"]),
    "augment-p-2": ("gan", "gan:\n  augment:\n    policy: cutout\n    p: 2\n", [], ["gan.augment.p", "[0, 1]", "2"]),
    "augment-target-1": ("gan", "gan:\n  augment:\n    target: 1.0\n", [], ["gan.augment.target", "(0, 1)"]),
    "class-balance-2": ("gan", "gan:\n  class_balance: 2\n", [], ["gan.class_balance", "[0, 1]", "2"]),
    "class-balance-negative": ("gan", "gan:\n  class_balance: -0.5\n", [], ["gan.class_balance", "≥ 0", "-0.5"]),
    "freeze-d-alone": ("gan", "gan:\n  freeze_d: 1\n", [], ["gan.freeze_d", "needs gan.init_from"]),
    "ema-continue-alone": (
        "gan", "gan:\n  ema_continue: true\n", [], ["gan.ema_continue", "needs gan.init_from"]
    ),
    "freeze-d-negative": ("gan", "gan:\n  freeze_d: -1\n", [], ["gan.freeze_d", "≥ 0", "-1"]),
    "init-from-missing": ("gan", None, ["--init-from", "no/such/run"], ["gan.init_from", "no/such/run", "not a finished GAN run"]),
    "gan-precision-fp16": ("gan", "gan:\n  precision: fp16\n", [], ["gan.precision", "auto, bf16, 32", "'fp16'"]),
    "gan-resample-bicubic": ("gan", "gan:\n  resample: bicubic\n", [], ["gan.resample", "'bicubic'", "nearest, lowpass"]),
    "augment-set-flip": ("gan", None, ["--set", "gan.augment.policy=flip"], ["gan.augment.policy", "'flip'", "cutout"]),
    "augment-p-without-policy": ("gan", None, ["--set", "gan.augment.p=0.5"], ["gan.augment.p", "needs gan.augment.policy"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_are_refused_before_any_work(
    case, capsys, tmp_path, phantom_root, monkeypatch
):
    """Config values and options are checked first: no store is built and no run folder made."""
    import torch
    import torch._dynamo  # noqa: F401  (imported first: it wraps mps.is_available on import)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    command, preset, extra, needles = BAD_SETTINGS[case]
    argv = [*TRAIN_COMMANDS[command](phantom_root), *extra]
    if preset is not None:
        (tmp_path / "preset.yaml").write_text(preset)
        argv += ["--config", tmp_path / "preset.yaml"]
    out, store = tmp_path / "out", tmp_path / "store"
    code, err = run_cli(capsys, *argv, "--out", out, "--cache", store, "--no-progress")
    assert_one_line_error(code, err, *needles)
    assert not out.exists() and not store.exists()


# argv (with {data} and {yaml} to fill in), YAML preset text, what the line must name
BAD_COMMAND_LINES = {
    "fraction-abc": (["classify", "--data", "{data}", "--fraction", "abc"], None, ["--fraction", "'abc'"]),
    "class-missing": (["gan", "--data", "{data}"], None, ["--class", "raregan gan --help"]),
    "data-missing": (["classify", "--arm", "gan"], None, ["--data"]),
    "yaml-unclosed": (["gan", "--data", "{data}", "--class", "Fracture", "--config", "{yaml}"], b"gan: [unclosed\n", ["{yaml}", "not valid YAML", "line 2"]),
    "yaml-tab": (["gan", "--data", "{data}", "--class", "Fracture", "--config", "{yaml}"], b"gan:\n\tlr: 1\n", ["{yaml}", "not valid YAML", "line 2"]),
    "yaml-binary": (["gan", "--data", "{data}", "--class", "Fracture", "--config", "{yaml}"], b"\x89PNG\r\n\x1a\n\xff", ["{yaml}", "not UTF-8"]),
    "yaml-empty": (["gan", "--data", "{data}", "--class", "Fracture", "--config", "{yaml}"], b"# nothing set yet\n", ["{yaml}", "is empty"]),
    "synth-seed-negative": (["synth", "--run", "{data}", "--seed", "-1"], None, ["--seed", "'-1'"]),
    "gan-eval-seed-negative": (["gan-eval", "--run", "{data}", "--seed", "-1"], None, ["--seed", "'-1'"]),
    "folds-1": (["classify", "--data", "{data}", "--folds", "1"], None, ["--folds", "≥ 2 folds, not 1"]),
    "folds-negative": (["classify", "--data", "{data}", "--folds", "-2"], None, ["--folds", "'-2'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_COMMAND_LINES))
def test_bad_command_lines_and_presets_give_one_line(case, capsys, tmp_path, phantom_root):
    """argparse's usage block and PyYAML's multi-line report become one `raregan: error:` line."""
    argv, preset, needles = BAD_COMMAND_LINES[case]
    yaml_path = tmp_path / "preset.yaml"
    if preset is not None:
        yaml_path.write_bytes(preset)
    fill = {"{data}": str(phantom_root), "{yaml}": str(yaml_path)}
    code, err = run_cli(capsys, *[fill.get(a, a) for a in argv], "--cache", tmp_path / "store")
    assert_one_line_error(code, err, *[fill.get(n, n) for n in needles])
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "preset.yaml"] == []  # no fold0/ …


def test_zero_byte_image_is_reported_as_empty(capsys, tmp_path, phantom_root):

    data = shutil.copytree(phantom_root, tmp_path / "data")
    image = sorted(data.rglob("*.jpg"))[0]
    image.write_bytes(b"")
    code, err = run_cli(
        capsys, "data", "--data", data, "--cache", tmp_path / "store", "--size", "16"
    )
    assert_one_line_error(code, err, str(image), "empty (0 bytes)")


def test_synth_from_a_mistyped_run_path_says_it_does_not_exist(capsys, tmp_path):
    run = tmp_path / "no-such-run"
    code, err = run_cli(capsys, "synth", "--run", run, "--n", "4", "--out", tmp_path / "out")
    assert_one_line_error(code, err, str(run), "does not exist")


@pytest.mark.parametrize("command", ["data", "filters", "gan", "classify", "compare"])
def test_patient_pattern_for_a_source_that_ignores_it_is_refused(
    command, capsys, tmp_path, phantom_root
):
    extra = {
        "filters": ["--class", "Fracture", "--out", tmp_path / "out"],
        "gan": ["--class", "Fracture"],
    }.get(command, [])
    if command in ("gan", "classify", "compare"):
        extra += ["--runs", tmp_path / "runs"]
    argv = [command, "--data", phantom_root, *extra, "--patient-pattern", r"(\d+)"]
    code, err = run_cli(capsys, *argv, "--cache", tmp_path / "store")
    assert_one_line_error(code, err, "--patient-pattern", "chexpert")
    assert not (tmp_path / "store").exists()


def test_data_help_promises_no_config(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    size_help = out.split("\n  --size SIZE", 1)[1].split("\n  --", 1)[0]
    assert "--config" not in out and "config" not in size_help and "default 64" in size_help


def test_near_duplicate_summary_says_how_many_were_found_and_shown(tmp_path):

    from pipelines.data.leakage import LeakageReport

    pairs = pd.DataFrame(
        [dict(i=k, j=k + 9, split_i="train", split_j="test", distance=1, exact=False,
              path_i=f"a{k}.png", path_j=f"b{k}.png") for k in range(9)]
    )  # fmt: skip
    report = LeakageReport(18, 0, pairs, n_exact=0, max_distance=4)
    listed = tmp_path / "pairs.csv"
    line = report.summary(listed).splitlines()[2]
    assert line.endswith(f": 9 found, 3 shown, all in {listed}"), line
    assert len(report.summary().splitlines()) == 6


def test_full_disk_while_building_the_store_gives_one_line_and_no_temp_file(
    capsys, tmp_path, phantom_root, monkeypatch
):

    import pipelines.data.store as store_module

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    cache = tmp_path / "store"
    code, err = run_cli(capsys, "data", "--data", phantom_root, "--cache", cache, "--size", "16")
    assert_one_line_error(code, err, str(cache), "not enough disk space", "1000 free")
    assert list(cache.iterdir()) == []


def test_disk_filling_up_while_writing_the_store_leaves_no_temp_file(capsys, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import pipelines.data.store as store_module

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(np.full((8, 8), k * 40, np.uint8)).save(paths[-1])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", full)
    cache = tmp_path / "store"
    with pytest.raises(store_module.RareganError, match="No space left on device") as caught:
        store_module.build_store(paths, 8, cache_dir=cache, workers=1, progress=False)
    assert str(cache) in str(caught.value) and list(cache.iterdir()) == []


def test_full_disk_while_saving_a_classifier_checkpoint_leaves_no_partial_file(tmp_path):
    from pipelines.classifier.run import AtomicModelCheckpoint
    from pipelines.errors import RareganError

    class Trainer:  # stands in for Lightning's Trainer: writes the file, or half of it on a full disk
        is_global_zero, global_step, loggers, full = True, 7, [], False

        def save_checkpoint(self, path, weights_only=False):
            with open(path, "wb") as fh:
                fh.write(b"half" if self.full else b"whole checkpoint")
            if self.full:
                raise OSError(28, "No space left on device")

    folder, trainer = tmp_path / "checkpoints", Trainer()
    best = folder / "best.ckpt"
    callback = AtomicModelCheckpoint(folder, filename="best")
    callback._save_checkpoint(trainer, str(best))
    assert best.read_bytes() == b"whole checkpoint" and callback._last_checkpoint_saved == str(best)
    trainer.full = True
    with pytest.raises(RareganError, match=f"{best}: No space left on device.*previous checkpoint"):
        callback._save_checkpoint(trainer, str(best))
    assert [p.name for p in folder.iterdir()] == ["best.ckpt"]
    assert best.read_bytes() == b"whole checkpoint"
    best.unlink()
    with pytest.raises(RareganError, match="no checkpoint was kept"):
        callback._save_checkpoint(trainer, str(best))
    assert list(folder.iterdir()) == []


def test_full_disk_while_writing_a_png_gives_one_line_and_no_partial_file(tmp_path, monkeypatch):
    import os

    import numpy as np
    from PIL import Image

    from pipelines.errors import RareganError
    from pipelines.images import save_grid, save_png

    image = np.zeros((8, 8), np.uint8)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(RareganError, match="grid.png: No space left on device"):
            save_grid(tmp_path / "grid.png", [[image, image]], col_titles=["a", "b"])

    def half(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG half")
        full()

    monkeypatch.setattr(Image.Image, "save", half)
    with pytest.raises(RareganError, match="sample.png: No space left on device"):
        save_png(tmp_path / "sample.png", image)
    assert list(tmp_path.iterdir()) == []

"""Transfer (gan.init_from): fine-tuning a finished GAN, and never leaking through it."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import gan_argv, tiny_config

from pipelines.cli import main


@pytest.fixture(scope="module")
def resplit_source(phantom_root, tmp_path_factory):
    """A finished tiny Fracture GAN on a --resplit split, which does not depend on the studied class
    (without it the phantoms' val is carved per studied class, so other classes' runs split otherwise)."""
    tmp = tmp_path_factory.mktemp("source")
    cfg = tiny_config(tmp, kimg=0.1, every=0.1)
    assert main(gan_argv(phantom_root, tmp, tmp / "run", cfg, "--resplit")) == 0
    return tmp / "run"


def lung_lesion_gan(phantom_root, tmp_path, capsys, out, *extra, config=None):
    """`raregan gan --class "Lung Lesion"` (tiny config by default): exit code and stderr."""
    config = config or tiny_config(tmp_path, kimg=0.1, every=0.1)
    argv = gan_argv(phantom_root, tmp_path, out, config, *extra)
    argv[argv.index("Fracture")] = "Lung Lesion"
    return main(argv), capsys.readouterr().err


def test_init_from_fine_tunes_a_finished_gan_in_its_final_phase(
    phantom_root, tmp_path, capsys, resplit_source
):
    """Transfer: the Fracture GAN starts a Lung Lesion GAN, which trains only the 16 px phase."""
    cfg = tiny_config(tmp_path, kimg=0.1, every=0.1)
    finished_run = resplit_source

    def gan(out, *extra, config=cfg):
        return lung_lesion_gan(
            phantom_root, tmp_path, capsys, out, "--resplit", *extra, config=config
        )

    code, err = gan(tmp_path / "ft", "--init-from", str(finished_run), "--freeze-d", "1")
    assert code == 0 and "ema_continue" not in err  # the note is ema_continue's alone
    run = tmp_path / "ft"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kimg"] == pytest.approx(0.1, abs=0.01) and summary["freeze_d"] == 1
    assert summary["init_from"] == str(finished_run)
    assert (pd.read_csv(run / "losses.csv")["level"] == 2).all()  # never below 16 px
    settings = json.loads((run / "fingerprint.json").read_text())["settings"]
    source_id = json.loads((finished_run / "fingerprint.json").read_text())["id"]
    assert settings["gan.init_from"] == source_id and settings["gan.freeze_d"] == 1
    assert "gan.ema_continue" not in settings  # off: fingerprints as before the option existed
    before = torch.load(finished_run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    after = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(before["D.from_rgb.2.weight"], after["D.from_rgb.2.weight"])  # frozen
    assert not torch.equal(before["D.dense.weight"], after["D.dense.weight"])
    assert not torch.equal(before["G_ema.to_rgb.2.weight"], after["G_ema.to_rgb.2.weight"])
    assert "init_from" not in json.loads((finished_run / "fingerprint.json").read_text())

    # it saw the Fracture GAN's images too: gan-eval checks its samples for copies of those
    argv = ["gan-eval", "--run", str(run), "--n", "16", "--no-heldout"]
    assert main([*argv, "--cache", str(tmp_path / "store")]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    (source,) = report["memorization_sources"]
    assert source["run"] == str(finished_run) and 0 <= source["n_near_copies"] <= 16
    assert (
        f"against the images of {finished_run}, which it was fine-tuned from"
        in capsys.readouterr().out
    )

    # gan.ema_continue: the module is told, and the fingerprint says so
    cont = yaml.safe_load(cfg.read_text())
    cont["gan"]["ema_continue"] = True
    (tmp_path / "continue.yaml").write_text(yaml.safe_dump(cont))
    code, err = gan(
        tmp_path / "ct", "--init-from", str(finished_run), config=tmp_path / "continue.yaml"
    )
    assert code == 0, err
    # its 0.1-kimg fine-tune (13 steps of 8) leaves 0.999^13 = 99 % of the source in the average
    assert "gan.ema_continue: after this 0.1-kimg fine-tune" in err
    assert "makes up 99% of the averaged one" in err
    settings = json.loads((tmp_path / "ct" / "fingerprint.json").read_text())["settings"]
    assert settings["gan.ema_continue"] is True
    ckpt = torch.load(tmp_path / "ct" / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["ema_continue"] is True

    # bad inputs: one line, exit 2, no folder left behind
    code, err = gan(tmp_path / "x", "--init-from", str(tmp_path))
    assert code == 2 and "is not a finished GAN run" in err and str(tmp_path) in err
    wider = tmp_path / "wider.yaml"
    wider.write_text(cfg.read_text().replace("[16, 16, 8]", "[16, 16, 16]"))
    code, err = gan(tmp_path / "x", "--init-from", str(finished_run), config=wider)
    assert code == 2 and "another architecture" in err and "G.blocks.1.conv1.weight" in err
    lowpass = tmp_path / "lowpass.yaml"
    lowpass.write_text(cfg.read_text() + "  resample: lowpass\n")
    code, err = gan(tmp_path / "x", "--init-from", str(finished_run), config=lowpass)
    assert code == 2 and "gan.resample nearest, this one lowpass" in err
    code, err = gan(tmp_path / "x", "--freeze-d", "1")
    assert code == 2 and "'gan.freeze_d' needs gan.init_from" in err
    code, err = gan(tmp_path / "x", "--init-from", str(finished_run), "--freeze-d", "3")
    assert code == 2 and "freezes every level of D (3 at 16 px)" in err
    assert not (tmp_path / "x").exists()


def test_init_from_refuses_a_source_that_learned_from_images_this_run_may_not(
    phantom_root, tmp_path, capsys, finished_run, resplit_source
):
    """Never leak through transfer: the source (or a GAN it started from in turn) must have learned
    only from training images of this run's fraction; the refusal names the run and an image."""

    def gan(out, source, *extra):
        return lung_lesion_gan(
            phantom_root, tmp_path, capsys, out, "--init-from", str(source), *extra
        )

    def copy_with(name, extra_paths=(), init_from=None, data=None, ids=None):
        """A copy of the --resplit Fracture GAN whose positives list extra images (their ids new
        unless given), trained on `data` by its config when given."""
        run = tmp_path / name
        shutil.copytree(resplit_source, run)
        positives = pd.read_csv(run / "positives.csv")
        extra = positives.iloc[[0] * len(extra_paths)].assign(path=list(extra_paths))
        extra["image_id"] = ids or [f"extra-{k}" for k in range(len(extra))]
        pd.concat([positives, extra]).to_csv(run / "positives.csv", index=False)
        if data is not None:
            config = yaml.safe_load((run / "config.yaml").read_text())
            config["run"]["data"] = str(data)
            (run / "config.yaml").write_text(yaml.safe_dump(config))
        if init_from is not None:
            summary = json.loads((run / "summary.json").read_text())
            (run / "summary.json").write_text(json.dumps({**summary, "init_from": str(init_from)}))
        return run

    # the phantoms' val is carved per studied class: the Fracture GAN trained on images that a
    # Lung Lesion run holds out
    code, err = gan(tmp_path / "x", finished_run)
    assert code == 2 and f"gan.init_from: {finished_run} learned from " in err
    assert "image(s) of this run's validation/test split" in err and "--resplit" in err
    # on the class-independent split: a source that saw one held-out image, named
    test_image = pd.read_csv(resplit_source / "heldout.csv")["path"].iloc[0]
    leaky = copy_with("leaky", [test_image])
    code, err = gan(tmp_path / "x", leaky, "--resplit")
    assert code == 2 and f"gan.init_from: {leaky} learned from 1 image(s) of this run's" in err
    assert str(test_image) in err
    # the leak two steps back: a clean-looking source fine-tuned from the leaky one
    clean_looking = copy_with("clean-looking", init_from=leaky)
    code, err = gan(tmp_path / "x", clean_looking, "--resplit")
    assert code == 2 and f"{leaky} learned from 1 image(s)" in err
    # the source learned from all of train: a 50 % run may not start from it
    code, err = gan(tmp_path / "x", resplit_source, "--resplit", "--fraction", "50")
    assert code == 2 and "training image(s) outside the 50 % fraction" in err
    assert "--fraction 50 or smaller" in err
    # an image of this data's folder that the run's records leave out (as --rarefy drops them)
    dropped = copy_with("dropped", [str(phantom_root / "train" / "dropped" / "view1_frontal.jpg")])
    code, err = gan(tmp_path / "x", dropped, "--resplit")
    assert code == 2 and "image(s) this run's data leaves out" in err
    # the source without its list of images cannot be checked
    unlisted = copy_with("unlisted")
    (unlisted / "positives.csv").unlink()
    code, err = gan(tmp_path / "x", unlisted, "--resplit")
    assert code == 2 and "does not list the images it learned from" in err
    assert not (tmp_path / "x").exists()
    # images of another data set are the user's pretraining choice
    other = copy_with(
        "other-data", [str(tmp_path / "elsewhere" / "a.png")], data=tmp_path / "elsewhere"
    )
    assert gan(tmp_path / "ok", other, "--resplit")[0] == 0
    # a source trained on a copy of this data, moved since: its images are matched by id
    held_id = pd.read_csv(resplit_source / "heldout.csv")["image_id"].iloc[0]
    moved = copy_with("moved", [str(tmp_path / "old-copy" / "a.png")], ids=[held_id])
    code, err = gan(tmp_path / "x", moved, "--resplit")
    assert code == 2 and "1 image(s) of this run's validation/test split" in err


def test_a_fine_tuned_gans_source_must_have_learned_only_from_the_classifiers_rows(
    capsys, tmp_path, phantom_root, finished_run
):
    """The gan arm never gets real positives the none arm lacks through the GAN a GAN was
    fine-tuned from either: a GAN whose own positives are none of the rows, fine-tuned from the
    100 % GAN, is refused at a 10 % classifier, naming that source."""
    from test_bad_inputs import assert_one_line_error, run_cli

    from pipelines.generators.synth import synthesize

    ft = tmp_path / "fine-tuned"
    shutil.copytree(finished_run, ft)
    synth = synthesize(ft, n=4, out=tmp_path / "synth-ft")
    positives = pd.read_csv(ft / "positives.csv")
    positives.iloc[:0].to_csv(ft / "positives.csv", index=False)
    summary = json.loads((ft / "summary.json").read_text())
    (ft / "summary.json").write_text(json.dumps({**summary, "init_from": str(finished_run)}))
    argv = ["classify", "--data", phantom_root, "--cache", tmp_path / "store", "--size", "16"]
    argv += ["--fraction", "10", "--arm", "gan", "--synth", synth, "--out", tmp_path / "clf"]
    code, err = run_cli(capsys, *argv, "--model", "cnn5", "--no-progress")
    assert_one_line_error(code, err, f"fine-tuned from {finished_run}", "outside this classifier")
    assert not (tmp_path / "clf").exists()


def test_ema_source_share_is_ema_beta_to_the_fine_tunes_steps():
    """What the note reads: the source's share of G_ema after the final phase's updates."""
    from pggan import PGGAN
    from pipelines.gan.transfer import SOURCE_SHARE_NOTE

    kw = {"resolution": 16, "channels": [16, 16, 8], "latent_dim": 16, "kimg_per_phase": 1.0}
    assert PGGAN(**kw, final_kimg=8.0).ema_source_share() is None  # the ramp restarts instead
    short = PGGAN(**kw, final_kimg=8.0, ema_continue=True).ema_source_share()
    assert short == pytest.approx(0.999**500)  # 8 kimg in batches of 16: 61 % left, a note
    long = PGGAN(**kw, final_kimg=40.0, ema_continue=True).ema_source_share()
    assert long == pytest.approx(0.999**2500) and long < SOURCE_SHARE_NOTE < short  # 8 %: none
    odd = PGGAN(**kw, final_kimg=0.1, default_batch=48, ema_continue=True).ema_source_share()
    assert odd == pytest.approx(0.999**3)  # a last, partial batch is a step too


def test_a_source_trained_on_in_pieces_is_checked_once(resplit_source, tmp_path, capsys):
    """gan-eval of a GAN whose sources saw its own images (one run continued with --init-from on
    its own classes, in pieces) checks those images once and says which run the others repeat."""
    piece, tuned = tmp_path / "piece", tmp_path / "tuned"
    for run, parent in ((piece, resplit_source), (tuned, piece)):  # copies, linked back
        shutil.copytree(resplit_source, run)
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "init_from": str(parent)}))
    argv = ["gan-eval", "--run", str(tuned), "--n", "16", "--no-heldout"]
    assert main([*argv, "--cache", str(tmp_path / "store")]) == 0
    report = json.loads((tuned / "eval" / "eval.json").read_text())
    assert 0 <= report["memorization"]["n_near_copies"] <= 16  # its own images: checked
    assert report["memorization_sources"] == [
        {"run": str(piece), "same_images_as": str(tuned)},
        {"run": str(resplit_source), "same_images_as": str(tuned)},
    ]
    out = capsys.readouterr().out
    assert (
        f"against the images of {piece}, which it was fine-tuned from: "
        f"the same images as {tuned}'s, checked above"
    ) in out
    assert (
        f"against the images of {resplit_source}, which piece was fine-tuned from: "
        f"the same images as {tuned}'s, checked above"
    ) in out


def test_an_exported_source_fine_tunes_exactly_as_its_run_and_moves_with_the_results(
    phantom_root, tmp_path, capsys, resplit_source
):
    """`gan --export-source DIR`: weights without optimizer state and what the source learned from;
    fine-tuning the copy moved elsewhere gives the same weights and fingerprint as fine-tuning the
    run itself, and the copy is checked for leakage like the run (its positives.csv travels)."""
    import os

    cfg = tiny_config(tmp_path, kimg=0.1, every=0.1)
    argv = gan_argv(phantom_root, tmp_path, resplit_source, cfg, "--resplit")
    exported = tmp_path / "exported"
    assert main([*argv, "--export-source", str(exported)]) == 0  # the finished run is reused
    files = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    assert files == sorted([
        ".raregan-output", "DONE", "checkpoints/last.ckpt", "config.yaml", "fingerprint.json",
        "generator_ema.pt", "heldout.csv", "positives.csv", "samples/final.png", "source.json",
        "summary.json",
    ])  # fmt: skip
    state = torch.load(exported / "checkpoints/last.ckpt", weights_only=False)
    assert "optimizer_states" not in state
    record = json.loads((exported / "source.json").read_text())
    assert (
        record["fingerprint"] == json.loads((resplit_source / "fingerprint.json").read_text())["id"]
    )
    moved = tmp_path / "elsewhere" / "source"
    moved.parent.mkdir()
    os.replace(exported, moved)

    for out, source in ((tmp_path / "from-run", resplit_source), (tmp_path / "from-copy", moved)):
        code, err = lung_lesion_gan(
            phantom_root, tmp_path, capsys, out, "--resplit", "--init-from", str(source)
        )
        assert code == 0, err
    a = torch.load(tmp_path / "from-run/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "from-copy/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fp = [
        json.loads((tmp_path / d / "fingerprint.json").read_text())["id"]
        for d in ("from-run", "from-copy")
    ]
    assert fp[0] == fp[1]

    # a copy that is too large is refused, nothing is left behind; a user's folder is never replaced
    from pipelines.errors import RareganError
    from pipelines.gan.transfer import export_source

    with pytest.raises(RareganError, match="MiB a committed source may take"):
        export_source(resplit_source, tmp_path / "big", max_bytes=1000)
    assert not (tmp_path / "big").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(RareganError, match="did not write"):
        export_source(resplit_source, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"

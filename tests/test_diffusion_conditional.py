"""The class-conditional diffusion model: one model of several classes with a class embedding,
trained with labels dropped to a null class and sampled with classifier-free guidance (Ho & Salimans
2022), on a small set of shapes whose classes a sample either shows or does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli_argv
from PIL import Image
from test_diffusion import diffusion_config

from pipelines.cli import main
from pipelines.errors import RareganError


def shapes_folders(root: Path, n: int = 30, size: int = 32) -> Path:
    """Three classes of one-channel images, one class per image: a bright disc, a bright bar, an
    empty field (noise alone), each under root/<class>/ with a patient of its own."""

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("bar", "disc", "empty"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = rng.normal(40, 8, (size, size))
            cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
            if cls == "disc":
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2] = 220
            elif cls == "bar":
                img[cy - 2 : cy + 2, 2:-2] = 220
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                root / cls / f"{cls}{i:03d}.png"
            )
    return root


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conditional")
    data = shapes_folders(tmp / "shapes")
    out = tmp / "run"
    argv = cli_argv("gan", data, out, tmp, "--class", "bar", "disc", "--generator", "diffusion",
                    "--config", str(diffusion_config(tmp, 4.0)), "--set", "diffusion.min_images=4",
                    "--set", "diffusion.timesteps=200", "--set", "diffusion.sample_steps=20",
                    "--set", "diffusion.guidance=1.5")  # fmt: skip
    assert main(argv) == 0
    return tmp, out


def test_a_diffusion_model_of_several_classes_is_conditioned_on_them_and_guided(conditional_run):
    """Several classes train one model with a class embedding (and the null class of classifier-
    free guidance); synth draws the class asked for; guidance mixes the two predictions as
    ε_null + g · (ε_class − ε_null), g = 1 being the conditional prediction alone."""
    from pipelines.generators import load

    tmp, run = conditional_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["conditional"] is True and summary["classes"] == ["bar", "disc"]
    settings = json.loads((run / "fingerprint.json").read_text())["settings"]
    assert settings["diffusion.p_uncond"] == 0.1 and settings["diffusion.guidance"] == 1.5
    sampler, _ = load(run)
    assert sampler.label_dim == 2 and sampler.unet.class_embedding.num_embeddings == 3
    assert main(["synth", "--run", str(run), "--n", "6", "--class", "disc"]) == 0
    rows = pd.read_csv(run / "synth-disc-n6-s0" / "synthetic.csv")
    assert len(rows) == 6 and (rows["disc"] == 1).all() and (rows["bar"] == 0).all()
    x = torch.randn(4, 1, 16, 16)
    y = torch.tensor([0, 1, 1, 0])
    t = torch.full((4,), 50)
    with torch.no_grad():
        eps_c = sampler.unet(x, t, class_labels=y)
        eps_0 = sampler.unet(x, t, class_labels=torch.full_like(y, 2))
        guided = sampler.predict(x, 50, y, "32")
        sampler.hp = {**sampler.hp, "guidance": 1.0}
        alone = sampler.predict(x, 50, y, "32")
    torch.testing.assert_close(guided, eps_0 + 1.5 * (eps_c - eps_0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, eps_c)
    assert not torch.allclose(eps_c, eps_0), "the class embedding changes the prediction"
    # what it learned: bars are wide and flat, discs round (the trained weights, guided; the
    # average of 500 steps at β 0.999 still holds 60 % of its random start)
    raw, _ = load(run, raw=True)
    raw.hp, raw.progress = {**raw.hp, "guidance": 3.0}, False
    labels = torch.nn.functional.one_hot(torch.arange(32) % 2, 2).float()
    drawn = raw.sample(32, seed=0, labels=labels)[:, 0].float()
    # a bar's brightness varies from row to row, hardly from column to column; a disc's alike
    flatness = (drawn.mean(dim=2).var(dim=1) / drawn.mean(dim=1).var(dim=1)).numpy()
    bar, disc = np.median(flatness[0::2]), np.median(flatness[1::2])
    assert bar > 4 * disc, (bar, disc)
    for labels, needle in [(None, "give one label row per image"),
                           (torch.ones(2, 2), "exactly one class")]:  # fmt: skip
        with pytest.raises(RareganError, match=needle):
            sampler.sample(2, labels=labels)


def test_labels_are_dropped_to_the_null_class_at_p_uncond_and_one_class_draws_are_unchanged():
    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion import step_batch

    hp = {**DEFAULTS["diffusion"], "batch_size": 64, "resolution": 8}
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    classes = torch.arange(20) % 3
    nulls = 0
    for step in range(50):
        plain = step_batch(images, hp, step)
        x, noise, t, y = step_batch(images, hp, step, classes=classes, label_dim=3)
        assert plain[3] is None
        for a, b in zip(plain[:3], (x, noise, t), strict=True):
            assert torch.equal(a, b), "a conditional batch draws the same images, noise and t"
        kept = y < 3
        pick = torch.randint(
            20, (64,), generator=torch.Generator().manual_seed(hp["seed"] * 1_000_003 + step)
        )
        assert torch.equal(y[kept], classes[pick][kept])
        nulls += int((~kept).sum())
    share = nulls / (50 * 64)  # binomial, n = 3200, p = 0.1: SD 0.0053
    assert 0.08 < share < 0.12, share


def test_an_image_of_several_classes_is_refused_by_the_class_conditional_model():
    from pipelines.generators.diffusion.training import class_index

    rows = pd.DataFrame({"image_id": ["a.png", "b.png", "c.png"]})
    good = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert class_index(rows, np.tile(good, (2, 1)), ["x", "y"]).tolist() == [0, 1, 0] * 2
    bad = np.array([[1, 0], [1, 1], [1, 0]], dtype=np.float32)
    with pytest.raises(
        RareganError, match=r"1 training images are positive for several of x, y \(e.g. b.png\)"
    ):
        class_index(rows, bad, ["x", "y"])


def test_a_conditional_model_starts_from_a_source_of_its_classes_or_of_one_class(
    conditional_run, capsys
):
    """A conditional run fine-tunes from a source of the same classes, or from a one-class model
    (its class embedding starts from its initialization); a source conditioned on other classes
    would map their embeddings onto the wrong classes and is refused in one line."""
    from pipelines.generators import load

    tmp, source = conditional_run
    cfg = str(diffusion_config(tmp, 0.08))

    def gan(out, *classes, source=source):
        argv = cli_argv("gan", tmp / "shapes", tmp / out, tmp, "--class", *classes, "--generator",
                        "diffusion", "--config", cfg, "--set", "diffusion.min_images=4",
                        "--set", "diffusion.timesteps=200", "--init-from", str(source))  # fmt: skip
        return main(argv)

    assert gan("same", "bar", "disc") == 0
    tuned, _ = load(tmp / "same")
    assert tuned.label_dim == 2
    capsys.readouterr()
    assert gan("other", "bar", "empty") == 2
    assert "is conditioned on bar, disc, this run on bar, empty" in capsys.readouterr().err
    one = tmp / "one"
    assert main(cli_argv("gan", tmp / "shapes", one, tmp, "--class", "bar", "--generator",
                         "diffusion", "--config", cfg, "--set", "diffusion.min_images=4",
                         "--set", "diffusion.timesteps=200")) == 0  # fmt: skip
    assert gan("from-one", "bar", "disc", source=one) == 0
    fresh, _ = load(tmp / "from-one")
    start, _ = load(one)
    for key in start.unet.state_dict():
        assert key in fresh.unet.state_dict()
    assert fresh.unet.class_embedding.num_embeddings == 3


def test_guidance_without_a_trained_null_class_is_refused(tmp_path, capsys):
    from pipelines.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("diffusion: {p_uncond: 0.0, guidance: 1.5}\n")
    with pytest.raises(RareganError, match="never trains the null class"):
        load_config(str(bad))
    bad.write_text("diffusion: {p_uncond: 0.0}\n")  # the default guidance, 1: no null class needed
    assert load_config(str(bad))["diffusion"]["guidance"] == 1.0


def test_a_conditional_model_is_sampled_at_another_guidance_without_retraining(
    conditional_run, capsys
):
    _, run = conditional_run
    base = ["synth", "--run", str(run), "--n", "4", "--class", "bar"]
    assert main(base) == 0 and main([*base, "--guidance", "1"]) == 0
    trained, plain = run / "synth-bar-n4-s0", run / "synth-bar-g1-n4-s0"
    first = sorted((trained / "images").glob("*.png"))[0].read_bytes()
    assert first != sorted((plain / "images").glob("*.png"))[0].read_bytes()
    settings = json.loads((plain / "fingerprint.json").read_text())["settings"]
    assert settings["guidance"] == 1.0
    assert "guidance" not in json.loads((trained / "fingerprint.json").read_text())["settings"]


def test_the_strip_of_one_class_of_a_conditional_model_shows_that_class_real_images():
    """gan-eval's real_vs_synthetic strip of a conditional model's one-class set showed training
    images of every class under the set's title; now the originals of the classes sampled."""
    from pipelines.fidelity.eval_run import strip_reals

    positives = pd.DataFrame({"bar": [1, 0, 1, 0], "disc": [0, 1, 0, 1]})
    originals = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)
    seen = np.repeat(originals, 2, axis=0)
    summary = {"class": "bar+disc", "classes": ["bar", "disc"], "conditional": True}
    rows = pd.DataFrame({"bar": [0.0, 0.0], "disc": [1.0, 1.0]})
    shown, title = strip_reals(summary, positives, originals, seen, rows)
    assert shown.ravel().tolist() == [1, 3] and title == "disc"
    both = pd.DataFrame({"bar": [1.0, 0.0], "disc": [0.0, 1.0]})
    assert strip_reals(summary, positives, originals, seen, both)[0].ravel().tolist() == [
        0,
        1,
        2,
        3,
    ]
    one = {"class": "bar", "classes": ["bar"], "conditional": False}
    shown, title = strip_reals(one, positives[["bar"]], originals, seen, rows[["bar"]])
    assert shown is seen and title == "bar"

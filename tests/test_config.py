"""Config presets: defaults, presets, overrides, and unknown keys refused."""

from __future__ import annotations

import pytest

from pipelines.config import CONFIG_DIR, DEFAULTS, load_config
from pipelines.errors import RareganError


def test_presets_load_and_override_defaults():
    demo, paper = load_config("cpu-demo"), load_config("paper")
    assert demo["gan"]["resolution"] == 64 and paper["gan"]["resolution"] == 256
    assert len(paper["gan"]["channels"]) == 7  # 4..256 px
    assert paper["compare"]["fractions"] == [1, 10, 50, 100]
    assert demo["gan"]["lr"] == DEFAULTS["gan"]["lr"]  # untouched keys keep defaults
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} >= {"cpu-demo", "paper", "cpu-gan"}
    for preset in CONFIG_DIR.glob("*.yaml"):  # every shipped preset is a valid config
        load_config(preset.stem)
    gan = load_config("cpu-gan")["gan"]  # the measured 30-minute GAN: 8 phases of 2 kimg, then 40
    assert gan["channels"] == [128, 128, 128, 64, 32] and gan["precision"] == "bf16"
    assert 8 * gan["kimg_per_phase"] + gan["final_kimg"] == 56.0


def test_overrides_win_and_defaults_are_not_mutated():
    cfg = load_config("cpu-demo", {"gan": {"kimg_per_phase": 0.5}})
    assert cfg["gan"]["kimg_per_phase"] == 0.5
    assert DEFAULTS["gan"]["kimg_per_phase"] == 6.0


def test_unknown_key_names_the_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan:\n  chanels: [1, 2]\n")
    with pytest.raises(RareganError, match=r"bad.yaml: unknown config key 'gan.chanels'"):
        load_config(bad)
    with pytest.raises(RareganError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("gan: [unclosed\n")
    with pytest.raises(RareganError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_augment_and_precision_settings_load_and_yaml_32_is_a_precision(tmp_path):
    cfg = load_config("cpu-demo")
    assert cfg["gan"]["augment"]["policy"] == "" and cfg["gan"]["precision"] == "32"
    preset = tmp_path / "aug.yaml"
    preset.write_text(
        "gan:\n  precision: 32\n  augment:\n    policy: translation,cutout\n    p: 1\n"
        "    adaptive: true\nclassify:\n  precision: 32\n"
    )
    cfg = load_config(preset)
    assert cfg["gan"]["precision"] == "32" == cfg["classify"]["precision"]
    assert cfg["gan"]["augment"] == {"policy": "translation,cutout", "p": 1, "adaptive": True,
                                     "target": 0.6, "speed_kimg": 10.0}  # fmt: skip
    with pytest.raises(RareganError, match=r"aug.yaml: config key 'gan.augment.speed_kimg'"):
        preset.write_text("gan:\n  augment:\n    speed_kimg: 0\n")
        load_config(preset)


def parsed(argv):
    """The Namespace `raregan ARGV` parses to (no command run)."""
    from pipelines.cli import build_parser

    parser, _ = build_parser(argv)
    return parser.parse_args(argv)


def test_config_is_resolved_once_file_then_set_then_flags_and_data_keys_are_honoured(
    tmp_path, phantom_root, capsys
):
    """data.* in a config file are read (they used to be overwritten by the flags' defaults);
    --set beats the file, a flag beats --set; the DataSpec is built from the same object."""
    from pipelines.commands.compare import CONFIG_FLAGS
    from pipelines.commands.settings import resolve_config

    path = tmp_path / "mine.yaml"
    path.write_text(
        "data: {val: 0.2, test: 0.3, seed: 7, resize: crop}\n"
        "classify: {epochs: 3, batch_size: 16}\ngan: {ema_beta: 0.99}\n"
    )
    base = ["compare", "--data", str(phantom_root), "--config", str(path)]
    cfg, spec = resolve_config(parsed(base), CONFIG_FLAGS)
    assert (spec.val, spec.test, spec.seed, spec.resize) == (0.2, 0.3, 7, "crop")
    assert {k: cfg["data"][k] for k in ("val", "test", "seed", "resize")} == {
        "val": 0.2, "test": 0.3, "seed": 7, "resize": "crop"
    }  # fmt: skip
    args = parsed(
        [*base, "--set", "classify.epochs=5", "--set", "gan.ema_beta=0.995", "--epochs", "9"]
    )
    cfg, _ = resolve_config(args, CONFIG_FLAGS)
    assert cfg["classify"]["epochs"] == 9 and cfg["gan"]["ema_beta"] == 0.995  # flag > --set > file
    assert cfg["classify"]["batch_size"] == 16
    cfg, spec = resolve_config(parsed([*base, "--split-seed", "3", "--val", "0.1"]), CONFIG_FLAGS)
    assert (spec.seed, spec.val, cfg["data"]["seed"], cfg["data"]["val"]) == (3, 0.1, 3, 0.1)
    capsys.readouterr()
    cfg, spec = resolve_config(parsed([*base, "--seed", "4"]), CONFIG_FLAGS)  # the old name
    assert spec.seed == 4 == cfg["data"]["seed"]
    assert "--seed is now --split-seed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "item, needle",
    [("freeze_d=2", "SECTION.KEY=VALUE"), ("gan.nope=1", "nope"), ("gan.freeze_d=[", "not a YAML value")],
)  # fmt: skip
def test_a_bad_set_is_one_line(item, needle, capsys, phantom_root):
    from pipelines.cli import main

    code = main(["gan", "--data", str(phantom_root), "--class", "Fracture", "--set", item])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err

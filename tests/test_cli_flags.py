"""The command line's flags: each data option defined once, research knobs as config keys (their old
flags hidden, still working with a note), seeds named for what they seed."""

from __future__ import annotations

import pytest
from test_cli import run_cli

from pipelines.cli import main


def command_parser(argv: list[str]):
    """The parser of the command `argv` names (the one `main` builds)."""
    import argparse

    from pipelines.cli import build_parser

    parser, _ = build_parser(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices[argv[0]]


def listed_flags(command: str) -> list[str]:
    """The option strings `raregan COMMAND --help` lists (less -h/--help)."""
    import argparse

    _, parser = command_parser([command])
    return [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings
        and action.help != argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction)
    ]


def test_compare_lists_at_most_20_flags_and_every_data_option_still_works(
    capsys, phantom_root, tmp_path
):
    """`compare --help` fits in one's head (it listed 39 flags): the research knobs are config keys
    (their old flags work, hidden, with a note), the rarer data options are listed by `raregan data
    --help` and named in one line elsewhere, and every data command still takes them all."""
    from pipelines.commands.common import DATA_OPTIONS, flag_names
    from pipelines.commands.compare import CONFIG_FLAGS
    from pipelines.commands.settings import resolve_config

    flags = listed_flags("compare")
    assert len(flags) <= 20, flags
    assert "--workers" not in flags and "--transfer-kimg" not in flags
    assert {flag_names(f)[0] for f, _ in DATA_OPTIONS} <= set(listed_flags("data"))
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "also --uncertainty, --all-views" in text and "see raregan data --help" in text
    # hidden, not gone: a data option and a moved knob still set what they set
    argv = ["compare", "--data", phantom_root, "--config", "cpu-demo", "--classes", "Fracture"]
    argv += ["--runs", tmp_path / "runs", "--cache", tmp_path / "store", "--size", "32"]
    argv += ["--set", "gan.resolution=32"]
    argv += ["--val", "0.2", "--transfer-kimg", "3", "--epochs", "2", "--list-cells"]
    argv = [str(a) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "--transfer-kimg is now --set compare.transfer_kimg=3.0" in err
    assert "--epochs is now --set classify.epochs=2" in err
    parser, _ = command_parser(argv)
    cfg, spec = resolve_config(parser.parse_args(argv), CONFIG_FLAGS)
    assert cfg["compare"]["transfer_kimg"] == 3.0 and cfg["classify"]["epochs"] == 2
    assert spec.val == 0.2 and spec.size == 32


def test_gan_and_classify_research_knobs_are_config_keys_and_their_old_flags_still_work(
    capsys, phantom_root
):
    """--freeze-d, --augment, --augment-p (gan) and --head (classify) were one flag per research
    knob: now `--set` keys, the flags hidden from --help, still parsed, with a note naming the key."""
    from pipelines.commands import classify, gan
    from pipelines.commands.settings import resolve_config

    assert not {"--freeze-d", "--augment", "--augment-p"} & set(listed_flags("gan"))
    assert "--head" not in listed_flags("classify")
    argv = ["gan", "--data", str(phantom_root), "--class", "A", "--init-from", "r"]
    argv += ["--freeze-d", "1", "--augment", "cutout"]
    args = command_parser(argv)[1].parse_args(argv[1:] + ["--augment-p", "adaptive"])
    err = capsys.readouterr().err
    assert "--freeze-d is now --set gan.freeze_d=1 (the flag goes in the next release)" in err
    assert "--augment is now --set gan.augment.policy=cutout; alone it also sets" in err
    assert "adaptive is --set gan.augment.adaptive=true" in err
    args.augment_cfg = gan.augment_overrides(args, resolve_config(args, gan.CONFIG_FLAGS)[0])
    cfg, _ = resolve_config(args, gan.CONFIG_FLAGS)
    assert cfg["gan"]["freeze_d"] == 1
    assert cfg["gan"]["augment"]["policy"] == "cutout" and cfg["gan"]["augment"]["adaptive"]
    # --augment none switches a configured augmentation off whole (no p left without a policy)
    argv = [
        "gan",
        "--data",
        str(phantom_root),
        "--class",
        "A",
        "--set",
        "gan.augment.policy=cutout",
    ]
    argv += ["--set", "gan.augment.p=0.5", "--augment", "none"]
    args = command_parser(argv)[1].parse_args(argv[1:])
    args.augment_cfg = gan.augment_overrides(args, resolve_config(args, gan.CONFIG_FLAGS)[0])
    aug = resolve_config(args, gan.CONFIG_FLAGS)[0]["gan"]["augment"]
    assert (aug["policy"], aug["p"], aug["adaptive"]) == ("", 0.0, False)
    argv = ["classify", "--data", str(phantom_root), "--head", "fc512-256"]
    cfg, _ = resolve_config(command_parser(argv)[1].parse_args(argv[1:]), classify.CONFIG_FLAGS)
    assert cfg["classify"]["head"] == "fc512-256"
    assert "--head is now --set classify.head=fc512-256" in capsys.readouterr().err


def test_sample_seed_names_what_it_seeds_and_its_old_name_still_works(
    finished_run, tmp_path, capsys
):
    import json as _json

    code = main(
        [
            "synth",
            "--run",
            str(finished_run),
            "--n",
            "4",
            "--seed",
            "2",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 0 and "--seed is now --sample-seed" in capsys.readouterr().err
    code = main(
        [
            "synth",
            "--run",
            str(finished_run),
            "--n",
            "4",
            "--sample-seed",
            "2",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert code == 0 and "is now" not in capsys.readouterr().err
    assert _json.loads((tmp_path / "a" / "summary.json").read_text())["seed"] == 2
    for name in ("synth_000000.png", "synth_000003.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (
            tmp_path / "b/images" / name
        ).read_bytes()

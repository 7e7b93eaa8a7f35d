"""What a hostile new user tries: each bad input gets one `raregan: error:` line, exit 2, no damage."""

from __future__ import annotations

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
    from pipelines.gan.synth import synthesize

    synth = synthesize(finished_run, n=4, out=tmp_path / "synth")  # GAN of the 100 % fraction
    argv = ["classify", "--data", phantom_root, "--cache", tmp_path / "store", "--size", "16"]
    argv += ["--fraction", "10", "--arm", "gan", "--synth", synth, "--out", tmp_path / "clf"]
    code, err = run_cli(capsys, *argv, "--model", "cnn5", "--no-progress")
    assert_one_line_error(code, err, str(synth), "outside this classifier's train rows")
    assert not (tmp_path / "clf").exists()

"""The `raregan` command line end to end: data summaries, filters output, and user errors → exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_filters(capsys, data, out, cache, *extra, cls="Fracture") -> tuple[int, str, str]:
    """`raregan filters` for a class with the given data, output and cache folders."""
    argv = ["filters", "--data", data, "--class", cls, "--out", out, "--cache", cache]
    return run_cli(capsys, *argv, *extra)


def assert_user_error(code, err, *needles):
    """Exit 2, one `raregan: error:` line naming the culprit, no traceback."""
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("raregan: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_data_summary_on_phantoms(capsys, phantom_root, tmp_path):
    code, out, err = run_cli(
        capsys,
        "data",
        "--data",
        phantom_root.parent,
        "--summary",
        "--cache",
        tmp_path,
        "--classes",
        "Fracture",
        "Lung Lesion",
        "--fractions",
        "10",
        "50",
        "100",
    )
    assert code == 0, err
    assert "chexpert data at" in out and "per split" in out and "nested fractions" in out
    assert "0 patients in more than one split" in out
    table = out[out.index("nested fractions") :]
    assert "Fracture" in table and "10.0" in table and "100.0" in table


def test_python_dash_m_and_user_error_in_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "data", "--data", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert_user_error(proc.returncode, proc.stderr, "nowhere")


def test_filters_command_writes_expanded_set_and_preview(capsys, phantom_root, tmp_path):
    out_dir = tmp_path / "flt"
    code, out, err = run_filters(capsys, phantom_root, out_dir, tmp_path / "store")
    assert code == 0, err
    table = pd.read_csv(out_dir / "expanded.csv")
    n = (table["filter"] == "original").sum()
    assert n > 0 and len(table) == 4 * n
    assert set(table["filter"]) == {"original", "gaussian_blur", "unsharp_mask", "minimum_filter"}
    assert (out_dir / "DONE").is_file() and Image.open(out_dir / "preview.png").size[0] > 200
    first = table.groupby("filter")["file"].first()
    orig = np.asarray(Image.open(out_dir / first["original"]), dtype=float)
    mini = np.asarray(Image.open(out_dir / first["minimum_filter"]), dtype=float)
    assert (mini <= orig).all() and (mini < orig).any()
    # every positive row really is a Fracture-positive train image of the source
    src = pd.read_csv(phantom_root / "train.csv")
    positives = set(src.loc[src["Fracture"] == 1, "Path"].str.split("/").str[2])
    assert set(table["patient"]) <= positives


def test_filters_unknown_class_and_bad_fraction(capsys, phantom_root, tmp_path):
    code, _, err = run_filters(capsys, phantom_root, tmp_path / "o", tmp_path / "s", cls="Fractur")
    assert_user_error(code, err, "'Fractur'", "Fracture")
    code, _, err = run_filters(
        capsys, phantom_root, tmp_path / "o", tmp_path / "s", "--fraction", "0"
    )
    assert_user_error(code, err, "fraction")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_a_user_error(capsys, phantom_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_filters(capsys, phantom_root, blocker / "out", tmp_path / "s")
    assert_user_error(code, err, str(blocker))


def make_class_folders(root, shared_data, n=6):
    """A small class-folder dataset from real knee images (grades 0 and 4), mixed sizes."""
    for grade in ("0", "4"):
        src = sorted((shared_data / "knee_kl" / "train" / grade).glob("*.png"))[:n]
        (root / grade).mkdir(parents=True)
        for k, f in enumerate(src):
            img = Image.open(f)
            if k % 2:
                img = img.resize((96, 80))  # mixed sizes must work
            img.save(root / grade / f.name)
    return root


def test_class_folders_mixed_sizes_and_non_image_files(capsys, shared_data, tmp_path):
    root = make_class_folders(tmp_path / "knee", shared_data)
    (root / "0" / "notes.txt").write_text("not an image")
    code, out, err = run_cli(
        capsys, "data", "--data", root, "--cache", tmp_path / "s", "--val", "0.2", "--test", "0.2"
    )
    assert code == 0, err
    assert "12 images" in out and "skipped 1 non-image files" in out


def test_corrupt_image_names_the_file_and_leaves_no_store(capsys, shared_data, tmp_path):
    root = make_class_folders(tmp_path / "knee", shared_data)
    bad = root / "4" / "9999999L.png"
    good = next((root / "4").glob("*.png"))
    bad.write_bytes(good.read_bytes()[:200])
    code, _, err = run_cli(capsys, "data", "--data", root, "--cache", tmp_path / "s")
    assert_user_error(code, err, "9999999L.png")
    assert not list((tmp_path / "s").glob("*.json"))


def test_missing_image_file_is_a_user_error(capsys, phantom_root, tmp_path):
    copy = tmp_path / "cx" / phantom_root.name
    shutil.copytree(phantom_root, copy)
    victim = pd.read_csv(copy / "train.csv")["Path"].iloc[0]
    (tmp_path / "cx" / victim).unlink()
    code, _, err = run_cli(capsys, "data", "--data", copy, "--cache", tmp_path / "s")
    assert_user_error(code, err, victim.split("/")[-1])


@pytest.mark.parametrize("content, needle", [("", "empty"), ("Path,Sex\nx,y\n", "Frontal/Lateral")])
def test_bad_csv_is_a_user_error(capsys, tmp_path, content, needle):
    (tmp_path / "train.csv").write_text(content)
    code, _, err = run_cli(capsys, "data", "--data", tmp_path, "--cache", tmp_path / "s")
    assert_user_error(code, err, "train.csv", needle)

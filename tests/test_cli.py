"""The `raregan` command line end to end: data summaries, filters output, and user errors → exit 2."""

from __future__ import annotations

import re
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
    # every positive row really is a Fracture-positive image of the source (the phantoms' own
    # valid.csv holds too few Fracture positives to select on, so val is carved and it trains too)
    src = pd.concat([pd.read_csv(phantom_root / f) for f in ("train.csv", "valid.csv")])
    positives = set(src.loc[src["Fracture"] == 1, "Path"].str.split("/").str[2])
    assert "val carved" in out
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
    assert "12 images" in out and f"raregan: warning: skipped 1 text files in {root / '0'}" in out


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


def test_top_level_help_loads_neither_torch_nor_lightning():
    code = (
        "import sys\n"
        "from pipelines.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout
    for command in ("data", "gan", "synth", "classify", "compare", "evaluate"):
        assert f"    {command} " in proc.stdout, command


def write_chexpert_csv_only(root):
    """A CheXpert train.csv of 20 patients (5 with a lateral view too) and no image files."""
    rows = ["Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Fracture,Lung Lesion"]
    for p in range(1, 21):
        fracture = "1.0" if p <= 4 else "-1.0" if p <= 7 else ""
        lesion = {8: "1.0", 9: "-1.0", 10: "-1.0", 11: "0.0"}.get(p, "")
        no_finding = "1.0" if p >= 12 else ""
        study = f"CheXpert-v1.0-small/train/patient{p:05d}/study1"
        rows.append(
            f"{study}/view1_frontal.jpg,Male,50,Frontal,AP,{no_finding},{fracture},{lesion}"
        )
        if p <= 5:
            rows.append(f"{study}/view2_lateral.jpg,Male,50,Lateral,,,1.0,")
    root.mkdir()
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def view_counts(out: str, label: str) -> list[int]:
    """The per-view row of `label` (frontal, lateral counts) in a CSV-only summary."""
    section = out[out.index("per view") : out.index("used by runs")]
    match = re.search(rf"^{re.escape(label)}\s+(\d+)\s+(\d+)\s*$", section, re.M)
    assert match, (label, section)
    return [int(match.group(1)), int(match.group(2))]


def test_data_summary_of_a_chexpert_csv_without_its_images(capsys, tmp_path):
    root = write_chexpert_csv_only(tmp_path / "chexpert")
    code, out, err = run_cli(capsys, "data", "--data", root, "--summary", "--cache", tmp_path / "s")
    assert code == 0, err
    assert "25 images of 20 patients listed" in out and "none of the image files is on disk" in out
    assert "--uncertainty u_ones: -1 → 1" in out
    assert view_counts(out, "images") == [20, 5] and view_counts(out, "patients") == [20, 5]
    assert view_counts(out, "Fracture") == [7, 5]  # 4 positive + 3 uncertain frontal; 5 lateral
    assert view_counts(out, "Lung Lesion") == [3, 0] and view_counts(out, "No Finding") == [9, 0]
    assert "used by runs (frontal views only): 20 images, 20 patients" in out
    assert "per split" in out and "nested fractions" in out
    assert not (tmp_path / "s").exists(), "no store is built"
    code, out, err = run_cli(
        capsys, "data", "--data", root / "train.csv", "--summary", "--uncertainty", "u_ignore",
        "--all-views", "--cache", tmp_path / "s",
    )  # fmt: skip
    assert code == 0, err
    assert view_counts(out, "Fracture") == [4, 5] and view_counts(out, "Fracture (unknown)") == [
        3,
        0,
    ]
    assert view_counts(out, "Lung Lesion (unknown)") == [2, 0]
    assert "used by runs (all views): 25 images, 20 patients" in out


def test_reports_name_the_command_that_runs_the_whole_sweep():
    """A report made by --collect or --cell K names the sweep's command, the same for all."""
    from pipelines.commands.compare import sweep_command

    whole = "raregan compare --data 'my data' --seeds 0 1"
    for extra in ("", " --collect", " --cell 3", " --cell=gan-x-f50-s0", " --list-cells"):
        assert sweep_command(whole + extra) == whole


def test_every_commands_help_loads_neither_torch_nor_pandas():
    """`raregan CMD --help` is instant (it used to take 2–5 s): the heavy layers load when a
    command runs. Checked by what a fresh interpreter imported, not by a timing."""
    import subprocess
    import sys

    from pipelines.cli import COMMAND_MODULES, command_names

    probe = (
        "import sys\nfrom pipelines.cli import main\n"
        "try:\n    main([sys.argv[1], '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'pandas', 'scipy', 'matplotlib')"
        " if m in sys.modules))"
    )
    for module in COMMAND_MODULES:
        name, _ = command_names(module)
        done = subprocess.run(
            [sys.executable, "-c", probe, name], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-1000:]
        assert done.stdout.strip().splitlines()[-1] == "[]", (name, done.stdout[-300:])


def test_quiet_lightning_hides_lightnings_srun_hint_and_nothing_else():
    """Where Slurm is installed, Lightning hints at srun on every Trainer; raregan runs outside srun
    on purpose (job-array tasks), so the hint is hidden; other warnings still show."""
    import warnings

    from pipelines.cli import quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        warnings.warn(
            "The `srun` command is available on your system but is not used.", stacklevel=1
        )
        warnings.warn("something a user should see", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user should see"]

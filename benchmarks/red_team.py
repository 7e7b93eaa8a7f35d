"""What a hostile new user tries, end to end on phantoms: each case runs `raregan` in a fresh
process and checks its exit code, its one-line message and that nothing of the user's was touched.

    python benchmarks/red_team.py [--keep]     # prints one line per case and the total; exit 1 if any fails

The cases are those of the reliability issue (#34): data loss, exit codes on signals, data that
must not be silently reshaped, tracebacks. The suite tests each one separately
(tests/test_user_folders.py, test_signals.py, test_data_*.py, test_bad_inputs.py); this script runs
them together as a user would, in a scratch folder, in about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_GAN = """gan:
  resolution: 16
  channels: [16, 16, 8]
  latent_dim: 16
  kimg_per_phase: {kimg}
  batch_per_resolution: {{4: 8, 8: 8, 16: 8}}
  checkpoint_every_kimg: 0.02
"""


def raregan(*argv, timeout=300, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", *map(str, argv)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def tree(root: Path, files: dict[str, list[str]], source: Path | None = None) -> Path:
    """root/<folder>/<name>: a copy of `source` (an image) or empty bytes."""
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            dest = root / folder / name
            if source is not None and dest.suffix.lower() in (".png", ".jpg", ".jpeg"):
                shutil.copyfile(source, dest)
            else:
                dest.write_bytes(b"")
    return root


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def one_line(done: subprocess.CompletedProcess, code: int, *needles: str) -> str | None:
    """None when the process exited `code` with one `raregan: error:` line holding the needles."""
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.startswith("raregan: error:")]
    if done.returncode != code:
        return f"exit {done.returncode}, wanted {code}: {done.stderr.strip()[-300:]}"
    if code == 2 and len(lines) != 1:
        return f"{len(lines)} error lines: {done.stderr.strip()[-300:]}"
    missing = [n for n in needles if n not in done.stderr]
    return f"missing {missing} in: {done.stderr.strip()[-300:]}" if missing else None


def signal_run(argv, ready: Path, signum: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", *map(str, argv)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not ready.exists():
        time.sleep(0.1)
    if proc.poll() is None:
        os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def cases(tmp: Path):
    """(name, callable returning None for a pass or the reason it failed)."""
    from pipelines.data.phantoms import write_phantoms

    prevalence = {"Fracture": 0.15, "Lung Lesion": 0.08, "Pleural Other": 0.06}
    data = write_phantoms(tmp / "runs" / "phantoms", n=300, size=32, seed=0, prevalence=prevalence)
    image = next((data / "train").rglob("*.jpg"))
    store = tmp / "store"
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY_GAN.format(kimg=0.04))
    gan = ["gan", "--data", data, "--class", "Fracture", "--config", cfg, "--cache", store]
    gan += ["--no-progress"]
    clf = ["classify", "--data", data, "--model", "cnn5", "--epochs", "1", "--size", "16"]
    clf += ["--cache", store, "--no-progress"]

    def user_folder(name: str) -> Path:
        folder = tree(tmp / name, {"": ["thesis.tex"], "chapter": ["notes.txt"]})
        (folder / "thesis.tex").write_text("years of work")
        return folder

    def survives(argv, name, *needles):
        def case():
            mine = user_folder(name)
            before = snapshot(mine)
            why = one_line(raregan(*argv, "--out", mine), 2, *needles)
            return why or (None if snapshot(mine) == before else "the user's folder changed")

        return case

    def refused(argv, *needles, code=2):
        return lambda: one_line(raregan(*argv), code, *needles)

    home = user_folder("home")
    yield "gan --redo on a user's folder", survives([*gan, "--redo"], "u1", "raregan did not make")
    yield (
        "classify --redo on a user's folder",
        survives([*clf, "--redo"], "u2", "raregan did not make"),
    )
    yield (
        "filters --out a user's folder",
        survives(
            ["filters", "--data", data, "--class", "Fracture", "--cache", store],
            "u3",
            "did not write",
        ),
    )

    def out_home():
        env = {**os.environ, "HOME": str(home)}
        before = snapshot(home)
        why = one_line(raregan(*clf, "--out", home, "--redo", env=env), 2, "your home folder")
        return why or (None if snapshot(home) == before else "the home folder changed")

    yield "--out ~ --redo", out_home
    yield "--out the data root", refused([*clf, "--out", data, "--redo"], "data root")
    yield "--out inside the data", refused([*clf, "--out", data / "train"], "data root")
    yield "--out /", refused([*clf, "--out", "/"], "file system's root")
    yield "synth --seed -1", refused(["synth", "--run", tmp, "--seed", "-1"], "--seed")
    yield "classify --folds 1", refused([*clf, "--folds", "1"], "--folds")
    yield "classify --folds -2", refused([*clf, "--folds", "-2"], "--folds")
    empty = tmp / "empty.yaml"
    empty.write_text("# nothing yet\n")
    yield (
        "an empty config file",
        refused([*gan[:5], "--config", empty, "--cache", store], "is empty"),
    )
    yield "--set without a section", refused([*gan, "--set", "freeze_d=2"], "SECTION.KEY=VALUE")
    yield "--fraction 0", refused([*clf, "--fraction", "0"], "fraction")
    yield "an unknown class", refused([*gan[:4], "Nope", *gan[5:]], "Nope")
    yield (
        "a data path that does not exist",
        refused([*clf[:2], tmp / "nowhere", *clf[3:]], "does not exist"),
    )

    folders = tree(tmp / "folders", {"normal": ["a1.png", "a2.png"], "fracture": ["b1.png"]}, image)

    def normal_is_a_class():
        done = raregan("data", "--data", folders, "--cache", store)
        ok = done.returncode == 0 and "2 labels" in done.stdout
        return None if ok else f"exit {done.returncode}: {done.stdout[-200:]}{done.stderr[-200:]}"

    yield "a class folder named normal is a class", normal_is_a_class
    kermany = tree(tmp / "kermany" / "chest_xray", {
        "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person2_virus_2.jpeg"],
        "train/NORMAL": ["IM-0001-0001.jpeg"], "train/COVID19": ["c1.png", "c2.png"]}, image)  # fmt: skip
    yield (
        "a COVID19 folder beside NORMAL/PNEUMONIA",
        refused(["data", "--data", kermany.parent, "--cache", store], "COVID19 holds 2 images"),
    )
    cased = tree(
        tmp / "cased", {"train/A": ["1.png"], "train/a": ["2.png"], "train/b": ["3.png"]}, image
    )
    yield (
        "class folders differing only in case",
        refused(["data", "--data", cased, "--cache", store], "differ only in case"),
    )
    dicom = tree(tmp / "dicom", {"fracture": ["1.png", *[f"s{i}.dcm" for i in range(5)]], "normal": ["2.png"]}, image)  # fmt: skip
    yield (
        "a class that is mostly DICOM",
        refused(["data", "--data", dicom, "--cache", store], "5 DICOM"),
    )
    conflict = tmp / "conflict" / "CheXpert-v1.0-small"
    shutil.copytree(data, conflict)
    rows = (conflict / "train.csv").read_text().splitlines()
    head, first = rows[0], rows[1].split(",")
    flip = first[:]
    col = head.split(",").index("Fracture")
    flip[col] = "0.0" if first[col] == "1.0" else "1.0"
    (conflict / "train.csv").write_text("\n".join([*rows, ",".join(flip)]) + "\n")
    yield (
        "the same image listed with two labels",
        refused(
            ["data", "--data", conflict, "--cache", store], "more than once with different values"
        ),
    )

    def sigterm():
        out = tmp / "term"
        cfg_long = tmp / "long.yaml"
        cfg_long.write_text(TINY_GAN.format(kimg=0.2))
        argv = [*gan[:6], cfg_long, *gan[7:], "--out", out]
        done = signal_run(argv, out / "checkpoints" / "last.ckpt", signal.SIGTERM)
        why = one_line(done, 143, "terminated (SIGTERM)")
        if why or (out / "DONE").exists():
            return why or "DONE written"
        return one_line(raregan(*argv, "--resume"), 0)

    yield "gan stopped by SIGTERM exits 143 and resumes", sigterm

    def sigint():
        out = tmp / "int"
        done = signal_run(
            [*clf, "--epochs", "200", "--out", out],
            out / "checkpoints" / "last.ckpt",
            signal.SIGINT,
        )
        return one_line(done, 130, "raregan: interrupted")

    yield "classify stopped by Ctrl-C exits 130", sigint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="raregan-red-team-"))
    start, failed, n = time.time(), 0, 0
    try:
        for name, case in cases(tmp):
            n += 1
            t = time.time()
            why = case()
            failed += why is not None
            print(
                f"{'PASS' if why is None else 'FAIL'} {time.time() - t:5.1f}s  {name}"
                + (f": {why}" if why else "")
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n - failed} passed, {failed} failed in {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

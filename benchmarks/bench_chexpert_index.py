"""Time and peak memory of indexing a CheXpert-sized train.csv (223,414 rows) with load_records.

Writes a synthetic train.csv in the real layout (same columns, ~64,540 patients, a plausible mix of
1 / 0 / -1 / blank), then loads it in fresh subprocesses: seconds of `load_records` and the peak
resident memory (ru_maxrss) above that process's own baseline after importing pandas, numpy and
pipelines.data. The CSV is generated in a subprocess too, so no child inherits a large parent RSS.
Targets: < 5 s and < 1 GiB. `--quick` uses 20,000 rows and one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBS = {  # observation: (P(1), P(0), P(-1)); the rest is blank
    "No Finding": (0.10, 0.0, 0.0),
    "Enlarged Cardiomediastinum": (0.05, 0.10, 0.06),
    "Cardiomegaly": (0.12, 0.05, 0.04),
    "Lung Opacity": (0.47, 0.03, 0.02),
    "Lung Lesion": (0.04, 0.01, 0.006),
    "Edema": (0.23, 0.09, 0.06),
    "Consolidation": (0.07, 0.12, 0.12),
    "Pneumonia": (0.03, 0.01, 0.08),
    "Atelectasis": (0.15, 0.01, 0.15),
    "Pneumothorax": (0.09, 0.25, 0.01),
    "Pleural Effusion": (0.38, 0.15, 0.05),
    "Pleural Other": (0.016, 0.01, 0.012),
    "Fracture": (0.04, 0.01, 0.003),
    "Support Devices": (0.52, 0.03, 0.005),
}
CHILD = """
import json, resource, sys, time
import numpy, pandas
from pipelines.data import load_records
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
records = load_records(sys.argv[1])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "base_kib": base, "peak_kib": peak, "rows": len(records)}))
"""


def write_train_csv(root: Path, rows: int, patients: int, seed: int = 0) -> Path:
    """A train.csv in the CheXpert layout with `rows` images of `patients` patients."""
    import numpy as np  # here, so the parent process stays small (children inherit its peak RSS)
    import pandas as pd

    rng = np.random.default_rng(seed)
    pid = np.sort(np.concatenate([np.arange(patients), rng.integers(0, patients, rows - patients)]))
    study = rng.integers(1, 5, rows)
    frontal = rng.random(rows) < 0.855
    view_no = np.where(frontal, 1, 2)
    side = np.where(frontal, "frontal", "lateral")
    paths = [
        f"CheXpert-v1.0-small/train/patient{p + 1:05d}/study{s}/view{v}_{d}.jpg"
        for p, s, v, d in zip(pid, study, view_no, side, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "Path": paths,
            "Sex": rng.choice(["Male", "Female", "Unknown"], rows, p=[0.59, 0.409, 0.001]),
            "Age": rng.integers(18, 91, rows),
            "Frontal/Lateral": np.where(frontal, "Frontal", "Lateral"),
            "AP/PA": np.where(frontal, rng.choice(["AP", "PA"], rows, p=[0.84, 0.16]), ""),
        }
    )
    for name, (pos, neg, unc) in OBS.items():
        value = rng.choice([1.0, 0.0, -1.0, np.nan], rows, p=[pos, neg, unc, 1 - pos - neg - unc])
        frame[name] = value
    root.mkdir(parents=True, exist_ok=True)
    out = root / "train.csv"
    frame.to_csv(out, index=False, na_rep="")
    return out


def child(csv_root: Path) -> dict:
    """Load in a fresh interpreter; it reports seconds and its max RSS after imports and load."""
    return run([sys.executable, "-c", CHILD, str(csv_root)])


def run(command: list[str]) -> dict:
    """Run a command from the repository root and parse the JSON on its last output line."""
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate the CSV, then print load seconds and peak MiB against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, one run")
    parser.add_argument(
        "--generate", nargs=3, metavar=("DIR", "ROWS", "PATIENTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.generate:
        csv = write_train_csv(Path(args.generate[0]), int(args.generate[1]), int(args.generate[2]))
        print(json.dumps({"mib": csv.stat().st_size / 2**20}))
        return
    rows, patients, runs = (20_000, 5_800, 1) if args.quick else (223_414, 64_540, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "CheXpert-v1.0-small"
        t = time.perf_counter()
        gen = [sys.executable, __file__, "--generate", str(root), str(rows), str(patients)]
        size_mib = run(gen)["mib"]
        print(f"generated {rows:,} rows, {patients:,} patients, {size_mib:.1f} MiB in "
              f"{time.perf_counter() - t:.1f} s (not timed)")  # fmt: skip
        loads = [child(root) for _ in range(runs)]
    seconds = min(r["seconds"] for r in loads)
    peak_mib = max(r["peak_kib"] - r["base_kib"] for r in loads) / 1024
    base = loads[0]["base_kib"]
    frontal = loads[0]["rows"]
    print(f"load_records: {seconds:.2f} s (best of {runs}; target < 5 s), {frontal:,} frontal rows")
    print(f"peak memory above imports: {peak_mib:.0f} MiB (target < 1024 MiB); baseline "
          f"{base / 1024:.0f} MiB")  # fmt: skip
    verdict = "PASS" if seconds < 5 and peak_mib < 1024 else "MISS"
    print(f"{verdict}: {rows:,}-row index in {seconds:.2f} s and {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()

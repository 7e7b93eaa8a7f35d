"""Time `make demo` as a newcomer runs it after install: the phantoms written afresh, nothing reused.

Runs the Makefile's own demo target (the same command, not a copy of it) with the phantoms and the
run folders in a temporary folder, so nothing of the checkout's runs/ is read or replaced; prints the
minutes of each round and the demo class's test AUC without and with the GAN. Run it on a quiet
machine (the issue's target: <= 5 min on 2 cores, none AUC >= 0.80). --quick: one round with a
tiny GAN and one epoch, to check that the path works (its minutes and AUCs mean nothing).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = "--set gan.kimg_per_phase=0.1 --set classify.epochs=1"


def one_round(tmp: Path, quick: bool) -> tuple[float, dict[str, float]]:
    """Seconds of one `make demo` in tmp, and the AUC per arm of its table."""
    args = f"--runs {tmp / 'runs'}" + (f" {QUICK}" if quick else "")
    cmd = ["make", "-s", "demo", f"PHANTOMS={tmp / 'phantoms'}", f"ARGS={args}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"make demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    table = tmp / "runs" / "phantoms" / "compare" / "demo" / "auc_table.csv"
    with table.open() as f:  # an arm without a finished seed has no AUC (nan)
        aucs = {row["arm"]: float(row["auc"] or "nan") for row in csv.DictReader(f)}
    return seconds, aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tiny round (a path check)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds to time (default 2)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    # `make demo` installs first when needed: that is the install's minutes, not the demo's
    subprocess.run(["make", "-s", "setup"], cwd=ROOT, check=True)
    times = []
    for k in range(rounds):
        with tempfile.TemporaryDirectory(prefix="raregan-demo-") as tmp:
            seconds, aucs = one_round(Path(tmp), args.quick)
        times.append(seconds)
        shown = ", ".join(f"{arm} {auc:.3f}" for arm, auc in aucs.items())
        print(f"round {k + 1}: {seconds:.0f} s ({seconds / 60:.1f} min); test AUC {shown}")
    print(f"make demo: {min(times) / 60:.1f}-{max(times) / 60:.1f} min over {rounds} round(s)")


if __name__ == "__main__":
    main()

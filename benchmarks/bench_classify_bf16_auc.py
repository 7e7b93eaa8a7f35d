"""Does bf16 training change the answer? DenseNet-121 on Kermany, fp32 vs bf16 autocast, same seed and epochs.

Real data: Kermany chest_xray (Kermany, Zhang, Goldbaum 2018, doi:10.17632/rscbjbr9sj.2, CC BY 4.0),
viral pneumonia made rare (`--rarefy viral=0.05`), 25 % of the training patients, arm `none`, the
`cpu-results` config (8 epochs at 64 px): the first cell of the committed sweep. Both runs go through
`raregan classify` with `classify.precision` forced to 32 and to bf16. Target (issue: DenseNet-121 fast
enough on CPU): the bf16 model's test AUC lies inside the 95 % CI (patient bootstrap) of the fp32 one.
Needs a CPU with native bf16; elsewhere the bf16 run would fall back to fp32 and the script says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.machine import cpu_bf16  # noqa: E402


def train(data: Path, precision: str, tmp: Path, args: argparse.Namespace) -> tuple[dict, float]:
    """metrics.json and wall seconds of one `raregan classify` run at the given precision."""
    cfg = yaml.safe_load((REPO / "configs" / "cpu-results.yaml").read_text())
    cfg["classify"]["precision"] = precision
    path = tmp / f"{precision}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp / f"run-{precision}"
    cmd = [sys.executable, "-m", "pipelines", "classify", "--data", str(data)]
    cmd += ["--rarefy", "viral=0.05", "--classes", "viral", "--fraction", str(args.fraction)]
    cmd += ["--arm", "none", "--config", str(path), "--out", str(out), "--no-progress"]
    cmd += ["--train-seed", "0", "--cache", str(REPO / "runs" / "store")]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def main() -> None:
    """Print both runs' viral and macro AUC with their CIs and whether bf16 lies in fp32's CI."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray")
    ap.add_argument("--fraction", type=float, default=25)
    ap.add_argument("--epochs", type=int, default=None, help="override the config's 8")
    ap.add_argument("--quick", action="store_true", help="1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.epochs = 1
    print(f"CPU native bf16 (AVX512-BF16 or AMX): {cpu_bf16()}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {p: train(args.data, p, Path(tmp), args) for p in ("32", "bf16")}
    for m, seconds in runs.values():
        a, v = m["auc"]["macro"], m["auc"]["viral"]
        print(
            f"{m['precision']:>10}: viral AUC {v['auc']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}], "
            f"macro {a['auc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]; {m['epochs_run']} epochs, "
            f"{seconds / 60:.1f} min"
        )
    fp32, bf16 = runs["32"][0]["auc"]["viral"], runs["bf16"][0]["auc"]["viral"]
    inside = fp32["lo"] <= bf16["auc"] <= fp32["hi"]
    print(f"bf16 viral AUC inside the fp32 95 % CI: {inside} (target: True)")


if __name__ == "__main__":
    main()

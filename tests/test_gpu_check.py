"""benchmarks/gpu_check.py --dry-run on CPU writes a summary with every section, so it never rots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA

DATA = SHARED_DATA / "chest_xray"


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "check"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(out), "--dry-run",
           "--data", str(DATA)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((out / "summary.json").read_text())
    text = (out / "summary.txt").read_text()
    assert text.startswith("gpu_check (dry run)") and text in done.stdout
    for name in ("tests", "pggan", "classify", "gan"):
        assert f"[{name}]" in text, name
        ok = {"ok", "skipped"} if name == "tests" or not DATA.is_dir() else {"ok"}
        assert res[name]["status"] in ok, (name, res[name].get("reason"))
    for key in ("reference", "paper_256"):
        assert res["pggan"][key]["img_s"] > 0 and res["pggan"][key]["gflop_step"] > 0
    assert "bf16 not measured" in res["pggan"]["note"]  # no CUDA here: fp32 only
    if DATA.is_dir():
        assert res["classify"]["fp32"]["ratio"] > 0
        assert "bf16" in res["classify"]
        assert res["gan"]["wall_s"] > 0 and res["gan"]["eval"]
        assert (out / "gan_samples.png").stat().st_size > 0
        assert (out / "gan_eval.json").is_file()

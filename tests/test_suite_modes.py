"""The suite on a newcomer's clone (no ../shared: real-data tests skip, saying where the data goes)
and in CI (RAREGAN_REQUIRE_DATA=1: the same tests fail when the data is missing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

REAL_DATA_TEST = "tests/test_data_kermany.py::test_real_training_split"


def run_without_data(tmp_path, require: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAREGAN_REQUIRE_DATA"}
    env["RAREGAN_SHARED_DATA"] = str(tmp_path / "no-such-folder")
    if require is not None:
        env["RAREGAN_REQUIRE_DATA"] = require
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", REAL_DATA_TEST]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("require", [None, "0"])
def test_missing_data_skips_with_where_to_put_it(tmp_path, require):
    done = run_without_data(tmp_path, require)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "RAREGAN_SHARED_DATA" in done.stdout
    assert str(tmp_path / "no-such-folder") in done.stdout


def test_ci_makes_missing_data_fail(tmp_path):
    done = run_without_data(tmp_path, "1")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 error" in done.stdout and "RAREGAN_REQUIRE_DATA is set" in done.stdout


def test_ci_script_requires_the_data():
    assert "RAREGAN_REQUIRE_DATA=1 make test" in (REPO / ".ci" / "run").read_text()

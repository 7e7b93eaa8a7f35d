#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh OUT [--dry-run] [...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python
exec env PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_check.py "$@"

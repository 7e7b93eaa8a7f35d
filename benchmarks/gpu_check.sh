#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh OUT [--dry-run] [...]
# Python: the project's .venv when there, else python3 (a lent GPU machine's, which holds PyTorch
# and Lightning), else python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
exec env PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_check.py "$@"

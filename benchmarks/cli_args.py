"""The command line benchmarks share: --quick (a smoke run, as `make bench` uses) and its own sizes."""

from __future__ import annotations

import argparse


def bench_args(doc: str, **options: int) -> argparse.Namespace:
    """Parse --quick plus integer options given as name=default, described by the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    for name, default in options.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    return parser.parse_args()

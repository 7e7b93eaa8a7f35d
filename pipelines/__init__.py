"""Orchestration: data sources, splits, store, runs on disk, the CLI, the experiment, reports."""

from pipelines.errors import RareganError

__all__ = ["RareganError"]

"""The effective config of a command, resolved once: defaults, the preset or file, --set, the
command's flags, then the data options (whose left-out values come from the config's data.*)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.commands.common import DATA_KEYS, config_overrides, spec_from_args
from pipelines.errors import RareganError

if TYPE_CHECKING:
    from pipelines.data.prepare import DataSpec


def parse_sets(items: list[str]) -> dict:
    """`--set a.b=value` items as nested overrides ({"a": {"b": value}}), values read as YAML."""
    import yaml

    over: dict = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        parts = key.strip().split(".")
        if not eq or len(parts) < 2 or not all(parts):
            raise RareganError(f"--set {item!r}: give SECTION.KEY=VALUE, e.g. --set gan.freeze_d=2")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise RareganError(f"--set {item!r}: {text!r} is not a YAML value") from None
        node = over
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RareganError(f"--set {item!r} sets a key inside {part!r}, which is a value")
        node[parts[-1]] = value
    return over


def _merge_into(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge_into(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def resolve_config(
    args: argparse.Namespace,
    options: dict[str, tuple[str, str]] | None = None,
    studied: list[str] | Callable[[dict], list[str]] | None = None,
    size_from: tuple[str, str] | None = None,
) -> tuple[dict, DataSpec]:
    """The effective config and the data it reads, resolved once: the defaults, then the preset
    or file (--config), then --set, then the command's own flags (`options`: flag → (section,
    key)), then the data options (--size, --resize, --split-seed, --val, --test) where given; a
    data option left out takes the config's data.* value. `size_from` names the config value the
    stored size defaults to instead of data.size (a GAN's resolution); `studied` may be read from
    the config (a callable). Every command, the sweep's cells and their records read this one
    object."""
    from pipelines.config import load_config

    over = _merge_into(parse_sets(getattr(args, "set", [])), config_overrides(args, options or {}))
    data = {key: getattr(args, key) for key in (*DATA_KEYS, "size")}
    over = _merge_into(over, {"data": {k: v for k, v in data.items() if v is not None}})
    if size_from and args.size is None:
        over["data"].pop("size", None)
    cfg = load_config(args.config, over)
    if size_from and args.size is None:
        cfg["data"]["size"] = cfg[size_from[0]][size_from[1]]
    return cfg, spec_from_args(args, cfg, studied(cfg) if callable(studied) else studied)

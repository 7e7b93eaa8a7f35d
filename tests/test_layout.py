"""The layout holds: imports go one way, commands → experiment → fidelity → generators → gan /
classifier → data → base → leaves.

The imports are read with ast (nothing is executed), lazy imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEAVES = ("filters", "pggan", "classify")
# (group, rank): a module may import its own group or any group of lower rank, nothing else
GROUPS = [
    ("commands", 6, ("pipelines.cli", "pipelines.__main__", "pipelines.commands")),
    ("experiment", 5, ("pipelines.experiment",)),
    ("fidelity", 4.8, ("pipelines.fidelity",)),  # judges any generator's samples
    ("generators", 4.5, ("pipelines.generators",)),  # the generator interface and the other kinds
    ("gan", 4, ("pipelines.gan",)),
    ("classifier", 4, ("pipelines.classifier",)),
    ("data", 3, ("pipelines.data",)),
    (
        "base",
        2,
        (
            "pipelines.errors",
            "pipelines.arms",
            "pipelines.runs",
            "pipelines.fingerprints",
            "pipelines.config",
            "pipelines.images",
            "pipelines.machine",
        ),
    ),
    ("package", 2.5, ("pipelines",)),  # pipelines/__init__ re-exports the error type
    *[(leaf, 1, (leaf,)) for leaf in LEAVES],
]


def group_of(module: str) -> tuple[str, int] | None:
    """The (group, rank) of a project module name; None for third-party modules."""
    for name, rank, prefixes in GROUPS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name, rank
    return None


def module_name(path: Path) -> str:
    """Dotted module name of a source file under the repository root."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> list[str]:
    """Every module a source file imports (absolute names; relative imports resolved)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # `from pipelines.gan import synth` imports pipelines.gan.synth; `from x import f`, x
            found += [f"{target}.{alias.name}" for alias in node.names]
    return found


def project_sources() -> dict[str, tuple[str, bool]]:
    """module name → (source, is_package) for every module of the four packages."""
    out = {}
    for top in ("pipelines", *LEAVES):
        for path in sorted((REPO / top).rglob("*.py")):
            out[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return out


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Each import that points up the layer order or sideways between groups."""
    bad = []
    known = set(sources)
    for module, (source, is_package) in sources.items():
        here = group_of(module)
        assert here is not None, f"{module} belongs to no layer; add it to GROUPS"
        for name in imported(source, module, is_package):
            target = name if name in known else name.rsplit(".", 1)[0]
            if target not in known:
                continue  # third-party
            there = group_of(target)
            if there is None or there[0] == here[0] or there[0] == "package":
                continue
            if there[1] >= here[1]:
                bad.append(f"{module} ({here[0]}) imports {target} ({there[0]})")
    return sorted(set(bad))


def test_imports_follow_the_layer_order():
    assert violations(project_sources()) == []


@pytest.mark.parametrize(
    "module, line",
    [
        ("pipelines.data.store", "from pipelines.experiment.stats import auc_table"),
        ("pipelines.gan.synth", "from pipelines.classifier import run"),
        ("pipelines.gan.run", "from pipelines.generators import load"),
        ("pipelines.generators.synth", "from pipelines.fidelity.metrics import c2st"),
        ("pggan.networks", "import pipelines.errors"),
        ("classify.metrics", "from filters import gaussian_blur"),
        ("pipelines.runs", "from pipelines.data.prepare import prepare"),
    ],
)
def test_a_reversed_arrow_is_caught(module, line):
    sources = project_sources()
    source, is_package = sources[module]
    sources[module] = (source + f"\n\ndef _late():\n    {line}\n", is_package)
    found = violations(sources)
    assert len(found) == 1 and found[0].startswith(module), found


def test_every_module_has_a_layer():
    assert all(group_of(m) is not None for m in project_sources())

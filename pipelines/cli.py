"""The `raregan` command line: one subcommand per stage; user errors print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import NoReturn

from pipelines.errors import RareganError

# Each module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
COMMAND_MODULES = [
    "pipelines.commands.data",
    "pipelines.commands.phantoms",
    "pipelines.commands.filters",
    "pipelines.commands.gan",
    "pipelines.commands.synth",
    "pipelines.commands.gan_eval",
    "pipelines.commands.classify",
    "pipelines.commands.compare",
    "pipelines.commands.evaluate",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `raregan: error: …` line (its subparsers too)."""

    def error(self, message: str) -> NoReturn:
        """Raise the argument error as a user error instead of printing the usage block."""
        raise RareganError(f"{message} (see {self.prog} --help)")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and the subcommand modules by name."""
    parser = Parser(
        prog="raregan",
        description="Rare-class GAN augmentation for X-ray classifiers, and the benchmark that tells whether it helps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    modules = {}
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        modules[mod.NAME] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a RareganError becomes `raregan: error: …` on stderr and exit code 2."""
    parser, modules = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(modules[args.command].run(args) or 0)
    except RareganError as err:
        one_line = re.sub(r"\s*\n\s*", " ", str(err).strip())
        print(f"raregan: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raregan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

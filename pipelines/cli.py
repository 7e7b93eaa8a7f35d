"""The `raregan` command line: one subcommand per stage; user errors print one line and exit 2."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import logging
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from pipelines.commands.common import check_output_places
from pipelines.errors import RareganError
from pipelines.machine import reuse_freed_memory

# Each module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
COMMAND_MODULES = [
    "pipelines.commands.data",
    "pipelines.commands.phantoms",
    "pipelines.commands.filters",
    "pipelines.commands.gan",
    "pipelines.commands.synth",
    "pipelines.commands.gan_eval",
    "pipelines.commands.gan_ablation",
    "pipelines.commands.classify",
    "pipelines.commands.compare",
    "pipelines.commands.evaluate",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `raregan: error: …` line (its subparsers too)."""

    def error(self, message: str) -> NoReturn:
        """Raise the argument error as a user error instead of printing the usage block."""
        raise RareganError(f"{message} (see {self.prog} --help)")


def command_names(module: str) -> tuple[str, str]:
    """A command module's NAME and HELP, read from its source without importing it (fast --help)."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))
    values = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return ast.literal_eval(values["NAME"]), ast.literal_eval(values["HELP"])


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and the subcommand modules by name.

    Only the command `argv` names is imported and given its options (every command when `argv` is
    None), so `raregan --help` needs neither torch nor Lightning."""
    parser = Parser(
        prog="raregan",
        description="Rare-class GAN augmentation for X-ray classifiers, and the benchmark that tells whether it helps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    wanted = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    modules = {}
    for module in COMMAND_MODULES:
        name, help_text = command_names(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            modules[name] = mod
    return parser, modules


# Lightning's subpackages, whose loggers print its info lines and adverts
LIGHTNING_PARTS = "accelerators callbacks core loggers loops plugins strategies trainer utilities"


def quiet_lightning() -> None:
    """Keep Lightning's adverts and info lines and library deprecation warnings from users.

    Lightning resets its package logger to INFO when imported, so the level goes on its parts."""
    for package in ("pytorch_lightning", "lightning_fabric"):
        for part in LIGHTNING_PARTS.split():
            logging.getLogger(f"{package}.{part}").setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*(litlogger|litmodels|LeafSpec)")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* is not empty")  # resume
    # where Slurm is installed but raregan runs outside srun (a login node, a job array's task)
    warnings.filterwarnings("ignore", message="The `srun` command is available")


class Stopped(BaseException):
    """SIGTERM or Ctrl-C: raised where the process is, so nothing after it (DONE, a record) runs.

    A BaseException, not a KeyboardInterrupt or SystemExit: Lightning turns those into exit 1 and
    exit 0; this one it passes on (after its own teardown), and the last checkpoint stays."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> NoReturn:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM (a scheduler's time limit or preemption) and SIGINT raise Stopped for the block;
    the previous handlers come back after it (where signals can be handled: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a RareganError becomes `raregan: error: …` on stderr and exit code 2.

    SIGTERM ends it with one line and exit 143 (128 + 15), Ctrl-C with `raregan: interrupted` and
    exit 130: an interrupted run writes no DONE or record and keeps its last checkpoint."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_lightning()
    parser, modules = build_parser(argv)
    try:
        with stop_on_signals():
            args = parser.parse_args(argv)
            if not args.command:
                parser.print_help()
                return 2
            check_output_places(args)
            args.command_line = shlex.join(["raregan", *map(str, argv)])  # for reports: how to redo
            reuse_freed_memory()  # +14-21 % on a CPU training step (pipelines/machine.py)
            return int(modules[args.command].run(args) or 0)
    except RareganError as err:
        one_line = re.sub(r"\s*\n\s*", " ", str(err).strip())
        print(f"raregan: error: {one_line}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped) as stop:
        if getattr(stop, "signum", signal.SIGINT) == signal.SIGTERM:
            print(
                "raregan: terminated (SIGTERM): nothing was marked done; an interrupted run keeps "
                "its last checkpoint (continue it with --resume)",
                file=sys.stderr,
            )
            return 128 + signal.SIGTERM
        print("raregan: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``aiflow`` command. Each area adds its own subcommands (see ``COMMAND_MODULES``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aiflow_notebook import __version__
from aiflow_notebook.core.errors import AIFlowError

# Modules with ``add_commands(subparsers)``; each owns its part of the command line.
COMMAND_MODULES = [
    "aiflow_notebook.cli.models",
    "aiflow_notebook.cli.server",
    "aiflow_notebook.cli.events",
    "aiflow_notebook.cli.schedule",
    "aiflow_notebook.cli.demo",
    "aiflow_notebook.cli.doctor",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiflow",
        description="aiflow-notebook: event-driven ML workflows on Flink, from Jupyter.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"aiflow-notebook {__version__}"))
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except AIFlowError as exc:
        print(f"aiflow: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


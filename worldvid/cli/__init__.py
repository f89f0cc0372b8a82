"""The ``worldvid`` console script: every subcommand's parser is declared in this package and nowhere else.

Options are generated from the library's config dataclasses (``worldvid.cli.options``), so defaults are
typed once and shown in every ``--help``. Only the chosen subcommand's options are built, so
``worldvid --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, NamedTuple, Sequence

from worldvid.version import __version__


class Command(NamedTuple):
    module: str
    """Module (in this package) holding ``add_<name>(parser)`` and ``run_<name>(args) -> int``."""
    help: str


COMMANDS: dict[str, Command] = {
    "envs": Command("data_commands", "list the registered worldvid tasks (Dream-v0 included)"),
    "collect": Command("data_commands", "collect episodes of an env into an HDF5 episode store (Ray-parallel)"),
    "train": Command("data_commands", "train a world model on episode stores (resumable)"),
    "evaluate": Command("data_commands", "open-loop imagined rollouts vs real frames, beside copy-last-frame"),
    "render": Command("data_commands", "real | imagined | error videos of open-loop rollouts, with per-step PSNR"),
    "plan": Command("plan_commands", "evaluate a goal-image planner (world model or oracle) over episodes"),
    "table": Command("plan_commands", "tabulate the summary.json of several worldvid plan out folders"),
    "dagger": Command("plan_commands", "plan with the model, record the episodes, fine-tune on them; repeat"),
    "sweep": Command("plan_commands", "Ray Tune sweep over planner settings or model sizes (resumable)"),
    "bench": Command("plan_commands", "throughput figures on this machine, as a table and JSON"),
    "demo": Command("plan_commands", "the whole pipeline on an embedded default: collect, train, evaluate, plan, render"),
}


def _handler(name: str, kind: str) -> Callable:
    module = importlib.import_module(f"worldvid.cli.{COMMANDS[name].module}")
    return getattr(module, f"{kind}_{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; only ``command``'s options are declared (all of them when None)."""
    parser = argparse.ArgumentParser(prog="worldvid", description="worldvid: a text-free video world model for "
                                     "decision making. `worldvid COMMAND --help` lists a command's options.")
    parser.add_argument("--version", action="version", version=f"worldvid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        if command is None or name == command:
            _handler(name, "add")(p)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``worldvid`` console script."""
    from worldvid.cli.options import apply_config_file

    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(command or "")  # only the chosen command's options: `worldvid --help` stays light
    try:
        if command in COMMANDS:
            sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
            apply_config_file(sub, argv[argv.index(command) + 1:])
        args = parser.parse_args(argv)
        return int(_handler(args.command, "run")(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Expected failures (bad input, missing or corrupt files) end with one clear line, not a traceback.
        print(f"worldvid {command or ''}: error: {err}".replace("  ", " "), file=sys.stderr)
        return 2

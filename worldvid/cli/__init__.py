"""The ``worldvid`` console script: options are declared in ``worldvid.cli.parsers`` (generated from the
library's config dataclasses, so defaults are typed once and shown in every ``--help``) and run by
``worldvid.cli.commands``. Only the chosen subcommand's options are built, so ``worldvid --help`` answers
without importing torch.
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``worldvid`` console script."""
    from worldvid.cli.options import apply_config_file
    from worldvid.cli.parsers import COMMANDS, build_parser, subparser

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command or "")  # only the chosen command's options: `worldvid --help` stays light
    try:
        if command in COMMANDS:
            apply_config_file(subparser(parser, command), argv[argv.index(command) + 1:])
        args = parser.parse_args(argv)
        from worldvid.cli import commands

        return int(getattr(commands, f"run_{args.command.replace('-', '_')}")(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        # Expected failures end with one clear line, not a traceback: bad input, missing, corrupt or unwritable
        # files (OSError), failed remote work (worldvid.parallel.WorkerError, a RuntimeError that names the
        # shard, episode or trial and the cause, whatever the cause's type: KeyError, TypeError, ...).
        print(f"worldvid {command}: error: {err}" if command in COMMANDS else f"worldvid: error: {err}", file=sys.stderr)
        return 2

"""The ``worldvid plan`` command line that reproduces a saved evaluation (``worldvid table --commands``).

Read from the ``plan`` parser itself (which declares its options from ``PlanEvalConfig`` and ``PlannerConfig``), so
a flag is spelled exactly as ``worldvid plan --help`` shows it; only values that differ from the defaults appear.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

from worldvid.cli.parsers import build_parser, subparser

NOT_OPTIONS = ("planner_config",)
"""Saved config entries that are not options themselves (the nested budget's fields are)."""


def _flags() -> dict[str, argparse.Action]:
    parser = subparser(build_parser("plan"), "plan")
    return {action.dest: action for action in parser._actions if action.option_strings}


def plan_command(config: Mapping[str, Any], out: str | os.PathLike) -> str:
    """``worldvid plan ... --out OUT`` for a saved ``PlanEvalConfig`` (the ``config`` of a summary.json, its
    ``planner_config`` nested); ValueError naming an entry the command line cannot express."""
    flags = _flags()
    entries = {k: v for k, v in config.items() if k not in NOT_OPTIONS}
    entries.update(config.get("planner_config") or {})
    words = ["worldvid", "plan"]
    for name, value in entries.items():
        action = flags.get(name)
        if action is None:
            raise ValueError(f"saved setting {name}={value!r} has no worldvid plan option")
        if value == action.default or (value is None and action.default is None):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(action.option_strings[0 if value else 1])
        elif value is None:  # e.g. num_steps: 0 on the command line means the model's default
            words += [action.option_strings[0], "0"]
        else:
            words += [action.option_strings[0], f"{value:g}" if isinstance(value, float) else str(value)]
    words += ["--out", str(out)]
    return shlex.join(words)


def folder_command(folder: str | os.PathLike) -> str:
    """``plan_command`` of a ``worldvid plan`` out folder (its summary.json)."""
    record = json.loads((Path(folder) / "summary.json").read_text())
    return plan_command(record["config"], folder)

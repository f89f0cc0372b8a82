"""Every subcommand's --help renders (argparse %-formats help texts: a '%' in a config docstring broke one)."""

from __future__ import annotations

import pytest

from worldvid.cli.parsers import COMMANDS, build_parser, subparser


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_renders(command):
    text = subparser(build_parser(command), command).format_help()
    assert text.startswith("usage: worldvid " + command)


def test_a_percent_in_a_help_text_is_shown_as_written():
    text = subparser(build_parser("train-cost"), "train-cost").format_help()
    assert "%" in text

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


def test_the_command_of_a_saved_evaluation_parses_back_to_its_config(tmp_path):
    import dataclasses
    import json
    import shlex

    from worldvid.agents import PlannerConfig
    from worldvid.cli.commands import plan_config
    from worldvid.cli.reproduce import folder_command, plan_command
    from worldvid.experiments.plan_config import PlanEvalConfig
    from worldvid.experiments.plan_table import budget_label

    config = PlanEvalConfig(env_id="worldvid/Push-v0", cost="learned", cost_model="runs/cost x", model="runs/m",
                            oracle=False, episodes=12, workers=2, seed=5000, num_steps=None, goal_steps=25,
                            stop_on_success=False, lockstep=3, episode_timeout_s=90.5, device="cpu",
                            planner_config=PlannerConfig(candidates=12, horizon=4, iterations=3,
                                                         population_decay=0.5, keep_elites=4, warm_start=False,
                                                         warm_tail="zero", settle=3, commit_margin=0.25,
                                                         stall_rounds=2, stall_gain=0.2, shrink_horizon=True))
    saved = json.loads(json.dumps(dataclasses.asdict(config)))  # as summary.json holds it
    command = plan_command(saved, tmp_path / "out dir")
    assert command.startswith("worldvid plan ") and "--no-early-stop" in command and "--denoise-steps 0" in command
    words = shlex.split(command)
    args = subparser(build_parser("plan"), "plan").parse_args(words[2:])
    assert plan_config(args) == config
    assert budget_label(config) == "12x4x3 decay0.5 keep4 tail0 settle3 commit0.25 stall2 shrink"
    assert args.out == str(tmp_path / "out dir")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"config": {**saved, "retired_setting": 1}}))
    with pytest.raises(ValueError, match="retired_setting=1 has no worldvid plan option"):
        folder_command(tmp_path / "run")

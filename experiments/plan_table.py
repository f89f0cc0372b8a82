"""Reporting plan evaluations: the summary row of one (``aggregate``), Markdown tables of many (``worldvid table``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from worldvid.agents import PlannerConfig
from worldvid.agents.mpc import EpisodeResult, summarize_episodes
from worldvid.experiments.plan_config import PlanEvalConfig


def aggregate(results: Sequence[EpisodeResult], seconds: float, config: PlanEvalConfig) -> dict[str, Any]:
    """The summary row of an evaluation: ``summarize_episodes`` plus what was run, and how fast."""
    row = {"label": config.label(), "env_id": config.env_id, "planner": config.planner,
           "cost": None if config.planner == "random" else config.cost, "oracle": config.oracle,
           "cost_model": config.cost_model if config.cost == "learned" and config.planner != "random" else None}
    row.update(summarize_episodes(results))
    p = config.planner_config
    budget = 0 if config.planner == "random" else p.imagined_per_decision / p.iterations  # frames per call
    row["imagined_frames_per_action"] = row["model_calls_per_action"] * budget
    row.update(config_columns(config))
    row.update(workers=config.workers, wall_seconds=seconds, episodes_per_second=len(results) / max(seconds, 1e-9))
    return row


def budget_label(config: PlanEvalConfig) -> str:
    """'candidates x horizon x iterations' of a sampling planner ('-' for random), e.g. '32x6x2', and the
    action repeat when there is one, e.g. '32x6x2 r3' (each planned action held 3 steps), and iCEM's population
    decay and kept elites, e.g. '32x6x2 decay0.5 keep4', a warm start filled with zeros ('tail0'), steps of no action
    scored after each candidate ('settle8'), the commit margin ('commit0.2'), stall restarts ('stall2'), plans cut at
    the episode's time limit ('shrink') and a video
    cost reduction other than 'final', e.g. '32x6x2 mean'."""
    p = config.planner_config
    repeat = f" r{p.action_repeat}" if p.action_repeat > 1 else ""
    icem = (f" decay{p.population_decay:g}" if p.population_decay < 1 else "") + (f" keep{p.keep_elites}" if p.keep_elites else "")
    tail = (" tail0" if p.warm_tail == "zero" else "") + (f" settle{p.settle}" if p.settle else "")
    tail += f" commit{p.commit_margin:g}" if p.commit_margin else ""
    tail += f" stall{p.stall_rounds}" if p.stall_rounds else ""
    tail += " shrink" if p.shrink_horizon else ""
    reduce = f" {p.reduce}" if p.reduce != "final" else ""
    return "-" if config.planner == "random" else f"{p.candidates}x{p.horizon}x{p.iterations}{repeat}{icem}{tail}{reduce}"


def config_columns(config: PlanEvalConfig) -> dict[str, str]:
    """The table columns that say what was run: budget, world model (the last two parts of its path and '(compiled)' with
    ``compile``, '-' for the oracle and random; a learned cost's run folder too) and the seeds, e.g. {'budget': '32x6x2', 'model_name': 'runs/push32s', 'seeds': '0-29'}."""
    model = "/".join(Path(config.model).parts[-2:]) if config.needs_model and config.model else "-"
    if config.compile and model != "-":
        model += " (compiled)"  # same imagination up to rounding, faster decisions
    if config.cost == "learned" and config.cost_model and config.planner != "random":
        cost_model = "/".join(Path(config.cost_model).parts[-2:])
        model = f"cost {cost_model}" if model == "-" else f"{model}, cost {cost_model}"
    return {"budget": budget_label(config), "model_name": model,
            "seeds": f"{config.seed}-{config.seed + config.episodes - 1}",
            "goals": goals_label(config)}


def goals_label(config: PlanEvalConfig) -> str:
    """Where the goals came from, e.g. 'task', 'expert 25-step', 'held-out 10-step (reacher_v5_32, tol 0.02)'."""
    if config.goal_store:
        return f"held-out {config.goal_steps}-step ({Path(config.goal_store).name}, tol {config.goal_tolerance:g})"
    return f"expert {config.goal_steps}-step" if config.goal_steps else "task"


TABLE_COLUMNS = (("label", "planner/cost/imagination", "{}"), ("model_name", "model", "{}"), ("goals", "goals", "{}"),
                 ("seeds", "seeds", "{}"),
                 ("budget", "cand x hor x iter", "{}"), ("success_rate", "success", "{:.0%}"),
                 ("success_ci95", "95% CI", "[{0[0]:.0%}, {0[1]:.0%}]"),
                 ("final_distance_mean", "final dist", "{:.3f}"), ("seconds_per_decision", "s/decision", "{:.3f}"),
                 ("model_calls_per_action", "calls/action", "{:.2f}"), ("episodes", "episodes", "{}"),
                 ("episodes_per_second", "episodes/s", "{:.3f}"))


TASK_COLUMNS = (("final_pose_success_mean", "pose success", "{:.0%}"), ("final_coverage_mean", "final coverage", "{:.2f}"),
                ("final_angle_error_mean", "final angle err", "{:.3f}"))
"""Columns of what a task reports at an episode's end (PushT: pose success, coverage, angle error), shown when a
row has them ('-' where another row lacks them)."""


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of summary rows (``aggregate`` dicts)."""
    columns = TABLE_COLUMNS + tuple(c for c in TASK_COLUMNS if any(c[0] in row for row in rows))
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) if key in row else "-" for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def summary_rows(folders: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The summary rows saved in the ``summary.json`` of ``worldvid plan`` out folders, for ``format_table``.

    The columns of ``config_columns`` are recomputed from each saved config, so summaries written before a
    column existed get it too.
    """
    rows = []
    for folder in folders:
        record = json.loads((Path(folder) / "summary.json").read_text())
        row = record["summary"]
        saved = dict(record["config"])
        saved["planner_config"] = PlannerConfig(**saved["planner_config"])
        row.update(config_columns(PlanEvalConfig(**saved)))
        rows.append(row)
    return rows

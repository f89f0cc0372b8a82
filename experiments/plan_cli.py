"""The command line of planner evaluation: ``worldvid plan`` (one evaluation) and ``worldvid table`` (many)."""

from __future__ import annotations

import argparse
from pathlib import Path

from worldvid.agents import PLANNER_NAMES, PlannerConfig
from worldvid.costs import COSTS, REDUCTIONS
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.experiments.plan_table import format_table, summary_rows
from worldvid.parallel import init_ray


def add_plan_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``worldvid plan`` to a subparsers object (``worldvid/cli.py``)."""
    defaults = PlannerConfig()
    p = subparsers.add_parser("plan", help="evaluate a goal-image planner (world model or oracle) over episodes")
    p.add_argument("--model", help="training run folder (or its model folder); not needed with --oracle or random")
    p.add_argument("--env", required=True, help="task id, e.g. worldvid/PointReach-v0")
    p.add_argument("--planner", default="cem", choices=list(PLANNER_NAMES), help="search method (random: baseline)")
    p.add_argument("--oracle", action="store_true", help="imagine in the true simulator (upper bound)")
    p.add_argument("--cost", default="keypoint", choices=list(COSTS), help="goal-image cost")
    p.add_argument("--episodes", type=int, default=30, help="episodes; episode i uses seed S+i")
    p.add_argument("--workers", type=int, default=1, help="parallel Ray workers (1: in this process)")
    p.add_argument("--out", required=True, help="folder for summary.json and episodes/*.npz")
    p.add_argument("--seed", type=int, default=0, help="base seed S")
    p.add_argument("--candidates", type=int, default=defaults.candidates, help="candidates per iteration")
    p.add_argument("--horizon", type=int, default=defaults.horizon, help="imagined steps per candidate")
    p.add_argument("--iterations", type=int, default=defaults.iterations, help="sampling rounds per decision")
    p.add_argument("--elites", type=int, default=defaults.elites, help="CEM elites")
    p.add_argument("--temperature", type=float, default=defaults.temperature, help="MPPI temperature")
    p.add_argument("--reduce", default=defaults.reduce, choices=list(REDUCTIONS), help="per-frame cost reduction")
    p.add_argument("--execute", type=int, default=1, help="actions executed per decision before replanning")
    p.add_argument("--num-steps", type=int, default=1, help="denoising steps per imagined frame (0: the model's)")
    p.add_argument("--size", type=int, help="frame size (default: the model's, else 32)")
    p.add_argument("--max-steps", type=int, help="cap on steps per episode (default: the task's time limit)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and torch threads) per worker")
    p.add_argument("--no-early-stop", action="store_true", help="run to the time limit; success = at the end")
    p.add_argument("--video", action="store_true", help="also write real | imagined | goal videos")
    p.add_argument("--record", help="also write the executed episodes as an episode store (training data)")
    p.add_argument("--address", help="Ray cluster address, e.g. 'auto' (default: RAY_ADDRESS if set)")
    p.set_defaults(func=_cmd_plan)
    return p


def config_from_args(args: argparse.Namespace) -> PlanEvalConfig:
    """The ``PlanEvalConfig`` of parsed ``worldvid plan`` arguments."""
    planner = PlannerConfig(candidates=args.candidates, horizon=args.horizon, iterations=args.iterations,
                            elites=min(args.elites, args.candidates) if args.candidates > 0 else args.elites,
                            temperature=args.temperature, reduce=args.reduce)
    return PlanEvalConfig(
        env_id=args.env, planner=args.planner, cost=args.cost, oracle=args.oracle, model=args.model,
        episodes=args.episodes, workers=args.workers, seed=args.seed, size=args.size, execute=args.execute,
        num_steps=args.num_steps or None, max_steps=args.max_steps, stop_on_success=not args.no_early_stop,
        cpus_per_worker=args.cpus_per_worker, planner_config=planner)


def _cmd_plan(args: argparse.Namespace) -> int:
    if args.address:
        init_ray(address=args.address)
    report = evaluate_planner(config_from_args(args), out=args.out, video=args.video, record=args.record)
    print(format_table([report.summary]))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    if args.record:
        print(f"recorded {len(report.results)} episodes into {args.record}")
    return 0


def add_table_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``worldvid table DIR...``: one Markdown table of several ``worldvid plan`` out folders."""
    p = subparsers.add_parser("table", help="tabulate the summary.json of several worldvid plan out folders")
    p.add_argument("dirs", nargs="+", help="out folders of worldvid plan")
    p.set_defaults(func=_cmd_table)
    return p


def _cmd_table(args: argparse.Namespace) -> int:
    print(format_table(summary_rows(args.dirs)))
    return 0

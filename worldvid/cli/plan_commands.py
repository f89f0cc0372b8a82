"""Subcommands about planning and experiments: plan, table, dagger, sweep, bench, demo.

Each command has ``add(parser)``, which declares its options (importing the library only for that command),
and ``run(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from worldvid.cli.data_commands import add_device
from worldvid.cli.options import add_config_file_option, add_config_options, flag, values

PLAN_OWN = ("planner_config", "device")
"""PlanEvalConfig fields that are not plain options (the nested budget has its own group)."""


def _planner_options(parser: argparse.ArgumentParser) -> list[str]:
    from worldvid.agents import PlannerConfig
    from worldvid.costs import REDUCTIONS

    group = parser.add_argument_group("search budget and hyper-parameters (PlannerConfig)")
    return add_config_options(group, PlannerConfig, choices={"reduce": REDUCTIONS})


def _planner_config(args: argparse.Namespace):
    from worldvid.agents import PlannerConfig

    given = values(args, [f.name for f in dataclasses.fields(PlannerConfig)])
    given["elites"] = min(given["elites"], given["candidates"])  # a small --candidates keeps the default valid
    return PlannerConfig(**given)


# ---------------------------------------------------------------------------- plan
def add_plan(parser: argparse.ArgumentParser) -> None:
    from worldvid.agents import PLANNER_NAMES
    from worldvid.costs import COSTS
    from worldvid.experiments.plan_config import PlanEvalConfig

    parser.add_argument("--out", required=True, help="folder for summary.json and episodes/*.npz")
    parser.add_argument("--video", action="store_true", help="also write real | imagined | goal videos")
    parser.add_argument("--record", metavar="STORE", help="also write the executed episodes as an episode store")
    parser.add_argument("--address", help="Ray cluster address, e.g. 'auto' (default: RAY_ADDRESS if set, else local)")
    add_device(parser)
    add_config_file_option(parser)
    add_config_options(parser, PlanEvalConfig, skip=PLAN_OWN, choices={"planner": PLANNER_NAMES, "cost": COSTS})
    _planner_options(parser)


def run_plan(args: argparse.Namespace) -> int:
    from worldvid.experiments.plan_config import PlanEvalConfig
    from worldvid.experiments.plan_eval import evaluate_planner
    from worldvid.experiments.plan_table import format_table
    from worldvid.parallel import init_ray

    given = values(args, [f.name for f in dataclasses.fields(PlanEvalConfig) if f.name not in PLAN_OWN])
    given["num_steps"] = given["num_steps"] or None  # 0: the model's default
    config = PlanEvalConfig(**given, planner_config=_planner_config(args), device=args.device)
    if args.address:
        init_ray(address=args.address)
    report = evaluate_planner(config, out=args.out, video=args.video, record=args.record)
    print(format_table([report.summary]))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    if args.record:
        print(f"recorded {len(report.results)} episodes into {args.record}")
    return 0


# ---------------------------------------------------------------------------- table
def add_table(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="out folders of worldvid plan")


def run_table(args: argparse.Namespace) -> int:
    from worldvid.experiments.plan_table import format_table, summary_rows

    print(format_table(summary_rows(args.dirs)))
    return 0


# ---------------------------------------------------------------------------- dagger
def add_dagger(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.dagger import DaggerConfig

    add_device(parser)
    add_config_file_option(parser)
    add_config_options(parser, DaggerConfig, skip=PLAN_OWN)
    _planner_options(parser)


def run_dagger(args: argparse.Namespace) -> int:
    from worldvid.experiments.dagger import DaggerConfig, run_dagger as run

    given = values(args, [f.name for f in dataclasses.fields(DaggerConfig) if f.name not in (*PLAN_OWN, "train_overrides")])
    for row in run(DaggerConfig(**given, planner_config=_planner_config(args), device=args.device)):
        print(f"round {row['round']}: planner with {row['model']} solved {row['success_rate']:.0%} of seeds "
              f"{row['seeds']}; fine-tuned -> {row['fine_tuned']}")
    print(f"wrote {Path(args.out) / 'dagger.json'}")
    return 0


# ---------------------------------------------------------------------------- sweep
def add_sweep(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.sweep import FIXED_DEFAULTS, MODEL_GRID, PLANNER_GRID

    planner, model = FIXED_DEFAULTS["planner"], FIXED_DEFAULTS["model"]
    parser.add_argument("--family", choices=["planner", "model"], default="planner", help="what to sweep (default: planner)")
    parser.add_argument("--out", required=True, help="sweep folder; rerunning the command resumes the sweep in it")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS if set, else local)")
    parser.add_argument(flag("max_concurrent"), dest="max_concurrent", type=int, default=2, help="trials at once (default: 2)")
    parser.add_argument("--seed", type=int, default=planner["seed"], help=f"base seed (default: {planner['seed']})")
    add_device(parser)
    p = parser.add_argument_group("planner family")
    p.add_argument("--model", help="training run folder")
    p.add_argument("--env", dest="env_id", help="task id")
    p.add_argument("--cost", default=planner["cost"], help=f"goal-image cost (default: {planner['cost']})")
    p.add_argument("--episodes", type=int, default=planner["episodes"], help=f"episodes per trial (default: {planner['episodes']})")
    p.add_argument(flag("max_steps"), dest="max_steps", type=int, help="cap on steps per episode (default: the task's)")
    p.add_argument("--planners", nargs="+", default=PLANNER_GRID["planner"], help="grid: planners (default: %(default)s)")
    p.add_argument(flag("num_steps"), dest="num_steps", type=int, nargs="+", default=PLANNER_GRID["num_steps"],
                   help="grid: denoising steps per imagined frame (default: %(default)s)")
    p.add_argument("--candidates", type=int, nargs="+", default=PLANNER_GRID["candidates"], help="grid: candidates (default: %(default)s)")
    p.add_argument("--horizons", type=int, nargs="+", default=PLANNER_GRID["horizon"], help="grid: horizons (default: %(default)s)")
    m = parser.add_argument_group("model family")
    m.add_argument("--data", help="episode store")
    m.add_argument(flag("steps"), dest="steps", type=int, default=model["steps"],
                   help=f"training steps per trial (default: {model['steps']})")
    m.add_argument("--channels", nargs="+", default=[",".join(map(str, c)) for c in MODEL_GRID["channels"]],
                   help="grid: UNet widths per level, e.g. 16,32,64 (default: %(default)s)")


def run_sweep(args: argparse.Namespace) -> int:
    from worldvid.experiments.sweep import run_sweep as run

    if args.family == "planner":
        if not (args.model and args.env_id):
            raise ValueError("the planner sweep needs --model and --env")
        fixed = {"env_id": args.env_id, "model": args.model, "cost": args.cost, "episodes": args.episodes,
                 "seed": args.seed, "max_steps": args.max_steps, "device": args.device}
        grid = {"planner": args.planners, "num_steps": args.num_steps, "candidates": args.candidates, "horizon": args.horizons}
    else:
        if not args.data:
            raise ValueError("the model sweep needs --data")
        fixed = {"data": args.data, "steps": args.steps, "seed": args.seed, "device": args.device}
        grid = {"channels": [[int(c) for c in spec.split(",")] for spec in args.channels]}
    run(args.family, args.out, fixed, grid, address=args.address, max_concurrent=args.max_concurrent)
    return 0


# ---------------------------------------------------------------------------- bench
def add_bench(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.bench import SECTIONS

    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), help="sections to run (default: all)")
    parser.add_argument("--out", help="folder for bench.json (default: only print the table)")
    add_device(parser)


def run_bench(args: argparse.Namespace) -> int:
    from worldvid.experiments.bench import run_bench as run

    run(args.sections, out=args.out, device=args.device)
    return 0


# ---------------------------------------------------------------------------- demo
def add_demo(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.pipeline import DemoConfig

    add_device(parser)
    add_config_file_option(parser)
    add_config_options(parser, DemoConfig, skip=("device",))


def run_demo(args: argparse.Namespace) -> int:
    from worldvid.experiments.pipeline import DemoConfig, run_demo as run

    given = values(args, [f.name for f in dataclasses.fields(DemoConfig) if f.name != "device"])
    run(DemoConfig(**given, device=args.device))
    return 0

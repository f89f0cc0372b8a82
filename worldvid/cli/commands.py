"""The handlers of the ``worldvid`` subcommands: ``run_<command>(args) -> exit code``.

Each turns parsed options (declared in ``worldvid.cli.parsers``) into the library's configs and calls the
library; nothing here parses argv.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from worldvid.cli.parsers import (COLLECT_HELP, COST_FROM_DATA, COST_REPORT_HELP, EVALUATE_HELP, EXPLAIN_HELP,
                                  MODEL_FROM_DATA, PLAN_OWN, RENDER_HELP)


def values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """{name: parsed value} for ``names``, lists turned into tuples (the configs' frozen form)."""
    return {name: tuple(value) if isinstance(value, list) else value
            for name in names for value in [getattr(args, name)]}


def print_rows(rows: Mapping[str, Any]) -> None:
    """Print a summary dict as aligned 'key  value' lines (floats to 4 significant digits)."""
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:{width}s}  {value:.4g}" if isinstance(value, float) else f"{key:{width}s}  {value}")


def run_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from worldvid.envs import DREAM_ID, TASKS
    from worldvid.envs.factory import env_class

    print(f"{'id':28s} {'action':>6s} {'steps':>5s}  goal object")
    for env_id in TASKS:
        env = gym.make(env_id, size=16)
        print(f"{env_id:28s} {env.action_space.shape[0]:6d} {gym.spec(env_id).max_episode_steps:5d}  "
              f"{getattr(env_class(env_id), 'goal_object', '-')}")
        env.close()
    print(f"{DREAM_ID:28s} {'model':>6s} {gym.spec(DREAM_ID).max_episode_steps:5d}  "
          "(a trained world model's task: gym.make(id, model=RUN))")
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from worldvid.data.collect import collect

    report = collect(**values(args, COLLECT_HELP))
    summary = report.store.summary()
    summary.update(new_episodes=report.new_episodes, seconds=round(report.seconds, 3),
                   frames_per_second=round(report.frames_per_second, 1) if report.new_frames else None)
    print_rows(summary)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from worldvid.verify import verify_path

    report = verify_path(args.path, full=args.full)
    for line in report.problems + report.notes:
        print(line)
    print(report.summary())
    return 0 if report.ok else 1


def run_export(args: argparse.Namespace) -> int:
    from worldvid.cli.parsers import EXPORT_HELP
    from worldvid.data.minari_io import export_minari

    report = export_minari(**values(args, EXPORT_HELP))
    for note in report.notes:
        print(f"note: {note}")
    print_rows({"dataset_id": report.dataset_id, "path": str(report.path), "episodes": report.episodes,
                "steps": report.steps})
    return 0


def run_import(args: argparse.Namespace) -> int:
    from worldvid.cli.parsers import IMPORT_HELP
    from worldvid.data.minari_io import import_minari

    report = import_minari(**values(args, IMPORT_HELP))
    for line in report.repaired:
        print(f"warning: broken shard {line}; imported its episodes again", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}")
    print_rows({**report.store.summary(), "new_episodes": report.new_episodes})
    return 0


def run_train(args: argparse.Namespace) -> int:
    from worldvid.model import WorldModelConfig
    from worldvid.run_folder import RunFolder
    from worldvid.train import TrainConfig, train
    from worldvid.train_distributed import DistributedConfig, train_distributed
    from worldvid.train_stores import open_stores, task_config

    train_config = TrainConfig(**values(args, [f.name for f in dataclasses.fields(TrainConfig)]))
    architecture = values(args, [f.name for f in dataclasses.fields(WorldModelConfig) if f.name not in MODEL_FROM_DATA])
    model_config = None
    if not args.resume and not args.init:  # sized for the data: one task, or several (a multi-task model)
        model_config = task_config(open_stores(args.data)).replace(**architecture)
    else:
        check_kept_architecture(args, architecture, WorldModelConfig,
                                lambda path: RunFolder.of(path).load_model().config)
    distributed = DistributedConfig(**values(args, [f.name for f in dataclasses.fields(DistributedConfig)]))
    if distributed.in_process:
        summary = train(args.data, args.out, train_config, model_config=model_config, resume=args.resume,
                        init_from=args.init, device=args.device)
    else:
        summary = train_distributed(args.data, args.out, train_config, model_config=model_config, resume=args.resume,
                                    device=args.device, init_from=args.init, distributed=distributed)
    print_rows(summary)
    return 0


def check_kept_architecture(args: argparse.Namespace, architecture: Mapping[str, Any], config_class: type,
                            kept_config: Callable[[str], Any]) -> None:
    """A resumed (``--resume``) or fine-tuned (``--init RUN``) run keeps its model's architecture: an architecture
    option (a ``config_class`` field) set away from its default must state the kept model's value, read by
    ``kept_config(path)``, else ValueError names each such option (an option at its default is taken as not given).
    A folder without a model is left for the trainer to report."""
    from worldvid.cli.options import flag, show

    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    given = {name: value for name, value in architecture.items() if value != defaults[name]}
    if not given:
        return
    source, path = ("--resume", args.out) if args.resume else ("--init", args.init)
    try:
        kept = kept_config(path)
    except FileNotFoundError:
        return
    differ = [f"{flag(name)} {show(value)} (it has {show(getattr(kept, name))})"
              for name, value in given.items() if getattr(kept, name) != value]
    if differ:
        raise ValueError(f"{source} keeps the architecture of the model in {path}, which these options would "
                         f"change: {'; '.join(differ)}; drop them, or train a new model without {source}")


def run_train_cost(args: argparse.Namespace) -> int:
    from worldvid.data.store import EpisodeStore
    from worldvid.goal_distance import GoalDistance, GoalDistanceConfig, GoalDistanceTrainConfig, train_goal_distance
    from worldvid.run_folder import RunFolder

    train_config = GoalDistanceTrainConfig(**values(args, [f.name for f in dataclasses.fields(GoalDistanceTrainConfig)]))
    architecture = values(args, [f.name for f in dataclasses.fields(GoalDistanceConfig) if f.name not in COST_FROM_DATA])
    model_config = None
    if not args.resume:
        spec = EpisodeStore(args.data[0]).spec
        model_config = GoalDistanceConfig(frame_size=spec.frame_shape[0], env_id=spec.env_id, **architecture)
    else:
        check_kept_architecture(args, architecture, GoalDistanceConfig,
                                lambda path: GoalDistance.from_pretrained(RunFolder.of(path).model_path).config)
    print_rows(train_goal_distance(args.data, args.out, train_config, model_config, resume=args.resume,
                                   device=args.device))
    return 0


def run_cost_report(args: argparse.Namespace) -> int:
    from worldvid.costs import make_cost
    from worldvid.experiments.cost_diagnostics import diagnose_costs

    names = [c for c in args.costs if c != "learned" or args.cost_model]
    costs = {c: make_cost(c, args.env_id, cost_model=args.cost_model if c == "learned" else None, device=args.device)
             for c in names}
    diagnose_costs(**values(args, COST_REPORT_HELP), costs=costs)
    print(f"wrote {Path(args.out) / 'diagnostics.json'} and {Path(args.out) / 'heat_map.png'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    run_open_loop_evaluation(**values(args, EVALUATE_HELP), device=args.device)
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from worldvid.experiments.explain import ExplainConfig, explain_model, format_summary

    config = ExplainConfig(**values(args, [f.name for f in dataclasses.fields(ExplainConfig)]))
    report = explain_model(**values(args, EXPLAIN_HELP), config=config, device=args.device)
    print(format_summary(report))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from worldvid.experiments.render import render_open_loop

    rows = render_open_loop(**values(args, RENDER_HELP), device=args.device)
    print(f"{'episode':>7} {'steps':>5} {'mean PSNR':>9} {'final':>6}  video")
    for row in rows:
        print(f"{row['episode']:7d} {row['horizon']:5d} {row['mean_psnr']:9.2f} {row['final_psnr']:6.2f}  {row['video']}")
    return 0


def _planner_config(args: argparse.Namespace):
    from worldvid.agents import PlannerConfig

    given = values(args, [f.name for f in dataclasses.fields(PlannerConfig)])
    given["elites"] = min(given["elites"], given["candidates"])  # a small --candidates keeps the default valid
    return PlannerConfig(**given)


def plan_config(args: argparse.Namespace):
    """The ``PlanEvalConfig`` of parsed ``worldvid plan`` options."""
    from worldvid.experiments.plan_config import PlanEvalConfig

    given = values(args, [f.name for f in dataclasses.fields(PlanEvalConfig) if f.name not in PLAN_OWN])
    given["num_steps"] = given["num_steps"] or None  # 0: the model's default
    return PlanEvalConfig(**given, planner_config=_planner_config(args), device=args.device)


def run_plan(args: argparse.Namespace) -> int:
    from worldvid.experiments.plan_eval import evaluate_planner
    from worldvid.experiments.plan_table import format_table
    from worldvid.parallel import init_ray

    config = plan_config(args)
    if args.address:
        init_ray(address=args.address)
    report = evaluate_planner(config, out=args.out, video=args.video, record=args.record)
    print(format_table([report.summary]))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    if args.record:
        print(f"recorded {len(report.results)} episodes into {args.record}")
    return 0


def run_table(args: argparse.Namespace) -> int:
    from worldvid.experiments.plan_table import format_table, summary_rows

    print(format_table(summary_rows(args.dirs)))
    if args.commands:
        from worldvid.cli.reproduce import folder_command

        print()
        for folder in args.dirs:
            print(folder_command(folder))
    return 0


def run_dagger(args: argparse.Namespace) -> int:
    from worldvid.experiments.dagger import DaggerConfig, run_dagger as run

    given = values(args, [f.name for f in dataclasses.fields(DaggerConfig) if f.name not in (*PLAN_OWN, "train_overrides")])
    for row in run(DaggerConfig(**given, planner_config=_planner_config(args), device=args.device)):
        print(f"round {row['round']}: planner with {row['model']} solved {row['success_rate']:.0%} of seeds "
              f"{row['seeds']}; fine-tuned -> {row['fine_tuned']}")
    print(f"wrote {Path(args.out) / 'dagger.json'}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from worldvid.experiments.sweep import run_sweep as run

    if args.family == "planner":
        if not (args.model and args.env_id):
            raise ValueError("the planner sweep needs --model and --env")
        fixed = {"env_id": args.env_id, "model": args.model, "cost": args.cost, "cost_model": args.cost_model,
                 "episodes": args.episodes,
                 "seed": args.seed, "max_steps": args.max_steps, "device": args.device}
        grid = {"planner": args.planners, "num_steps": args.num_steps, "candidates": args.candidates, "horizon": args.horizons}
    else:
        if not args.data:
            raise ValueError("the model sweep needs --data")
        fixed = {"data": args.data, "steps": args.steps, "seed": args.seed, "device": args.device}
        grid = {"channels": [[int(c) for c in spec.split(",")] for spec in args.channels]}
    run(args.family, args.out, fixed, grid, address=args.address, max_concurrent=args.max_concurrent)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from worldvid.experiments.bench import run_bench as run

    run(args.sections, out=args.out, device=args.device)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from worldvid.experiments.pipeline import DemoConfig, run_demo as run

    given = values(args, [f.name for f in dataclasses.fields(DemoConfig) if f.name != "device"])
    run(DemoConfig(**given, device=args.device))
    return 0

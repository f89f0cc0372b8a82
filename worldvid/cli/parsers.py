"""Every subcommand's options, declared in one place.

``add_<command>(parser)`` declares a command's options, importing the library only for that command (so
``worldvid --help`` needs no torch); most come from config dataclasses through ``worldvid.cli.options``.
The handlers that run the commands are ``worldvid.cli.commands``.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable

from worldvid.cli.options import CONFIG_FILE, Option, config_options, flag, function_options
from worldvid.version import __version__

COMMANDS: dict[str, str] = {
    "envs": "list the registered worldvid tasks (Dream-v0 included)",
    "collect": "collect episodes of an env into an HDF5 episode store (Ray-parallel)",
    "verify": "check an episode store (manifest, shard sizes, checksums, episode lengths) or a run / model folder",
    "export": "write an episode store as a local Minari dataset (extra: pip install worldvid[minari])",
    "import": "make an episode store from a local Minari dataset with pixel observations (extra: minari)",
    "train": "train a world model on episode stores (resumable)",
    "train-cost": "learn a goal-reaching distance (d(frame, goal) in steps) from episode stores alone (resumable)",
    "cost-report": "how well goal-image costs track progress: rank correlations, descent share, heat maps",
    "evaluate": "open-loop imagined rollouts vs real frames, beside copy-last-frame",
    "render": "real | imagined | error videos of open-loop rollouts, with per-step PSNR",
    "explain": "what a model takes from its frames, what from its actions: shares, attributions, faithfulness",
    "plan": "evaluate a goal-image planner (world model or oracle) over episodes",
    "table": "tabulate the summary.json of several worldvid plan out folders",
    "dagger": "plan with the model, record the episodes, fine-tune on them; repeat",
    "sweep": "Ray Tune sweep over planner settings or model sizes (resumable)",
    "bench": "throughput figures on this machine, as a table and JSON",
    "demo": "the whole pipeline on an embedded default: collect, train, evaluate, plan, render",
}
"""Subcommand -> one-line help."""

DEVICE = Option("--device", {"help": "torch device of the model, e.g. cpu, cuda, cuda:1 "
                                     "(default: CUDA when present, else CPU)"})
MODEL_HELP = "training run folder (worldvid train --out) or a model folder"
MODEL_FROM_DATA = ("action_dim", "frame_size", "channels", "env_id", "tasks")
"""WorldModelConfig fields the data decides (not options)."""
COST_FROM_DATA = ("frame_size", "env_id")
"""GoalDistanceConfig fields the data decides (not options)."""
PLAN_OWN = ("planner_config", "device")
"""Config fields that are not plain options (the nested planner budget has its own group; --device)."""

COLLECT_HELP = {
    "env_id": "Gymnasium id, e.g. worldvid/PointReach-v0 or Reacher-v5",
    "num_episodes": "number of episodes; episode i uses seed S+i",
    "out": "store folder (re-running into it completes what is missing)",
    "workers": "parallel Ray workers (1: in this process)",
    "address": "Ray cluster for --workers > 1, e.g. 'auto' or 'ray://head:10001' (default: RAY_ADDRESS if set, "
               "else Ray started locally)",
    "policy": "collection policy",
    "size": "frame height and width in pixels",
    "seed": "base seed S",
    "episodes_per_shard": "episodes per HDF5 shard file",
    "max_steps": "end episodes after this many steps (default: the env's own limit; e.g. Swimmer-v5's is 1,000)",
}
EVALUATE_HELP = {
    "model": MODEL_HELP,
    "data": "episode store; default: the run's own data, held-out episodes only",
    "rollout_steps": "imagined steps per open-loop window",
    "out": "folder for eval.json (default: the run folder)",
    "controllability_seeds": "env seeds of the controllability check (0: skip)",
    "max_episodes": "held-out episodes to cut windows from, at most",
    "seed": "sampler noise seed",
}
RENDER_HELP = {
    "model": MODEL_HELP,
    "out": "folder for the videos and their .json sidecars",
    "data": "episode store; default: the run's own data (held-out episodes), else fresh real episodes",
    "episodes": "number of episodes to render",
    "rollout_steps": "imagined steps per video, at most the episode length",
    "gif": "write GIFs instead of MP4s",
    "scale": "nearest upscale factor (default: panels at least 128 pixels tall)",
    "fps": "frames per second",
    "seed": "sampler noise seed",
    "num_steps": "denoising steps per imagined frame (default: the model's)",
}


def declare(parser: argparse._ActionsContainer, options: Iterable[Option]) -> None:
    """Add ``options`` to ``parser`` (or an argument group of it)."""
    for option in options:
        parser.add_argument(option.flag, **option.kwargs)


def _plain(*declared: tuple[str, dict]) -> list[Option]:
    return [Option(f, kw) for f, kw in declared]


def add_envs(parser: argparse.ArgumentParser) -> None:
    pass


def add_collect(parser: argparse.ArgumentParser) -> None:
    from worldvid.data.collect import collect
    from worldvid.data.policies import POLICIES

    declare(parser, function_options(collect, COLLECT_HELP, choices={"policy": sorted(POLICIES)}))


def add_verify(parser: argparse.ArgumentParser) -> None:
    declare(parser, _plain(
        ("path", {"metavar": "PATH", "help": "episode store, training run folder or model folder"}),
        ("--full", {"action": "store_true", "help": "also read every byte of shards whose checksum matches"}),
    ))


EXPORT_HELP = {
    "data": "episode store folder",
    "dataset_id": "Minari dataset id NAMESPACE/NAME-v0, written under MINARI_DATASETS_PATH "
                  "(default ~/.minari/datasets)",
}
IMPORT_HELP = {
    "dataset_id": "local Minari dataset id NAMESPACE/NAME-v0, read from MINARI_DATASETS_PATH (nothing is "
                  "downloaded)",
    "out": "store folder (re-running into it completes what is missing)",
    "episodes_per_shard": "episodes per HDF5 shard file (a dataset exported by worldvid keeps its store's)",
    "observation_key": "key of the frames in Dict observations (default: 'observation', else the one frame key)",
}


def add_export(parser: argparse.ArgumentParser) -> None:
    from worldvid.data.minari_io import export_minari

    declare(parser, function_options(export_minari, EXPORT_HELP) + _plain(
        ("--format", {"choices": ["minari"], "default": "minari", "help": "dataset format (default: minari)"})))


def add_import(parser: argparse.ArgumentParser) -> None:
    from worldvid.data.minari_io import import_minari

    declare(parser, function_options(import_minari, IMPORT_HELP))


def _add_training(parser: argparse.ArgumentParser, train_cls: type, architecture_cls: type, skip: tuple[str, ...],
                  data_help: str, out_help: str, extra: list[Option], choices: dict[str, Any] | None = None) -> None:
    """The options every training command shares: data, run folder, resume, device, config file, and the
    training and architecture configs (fields the data decides, ``skip``, are not options; ``choices`` restricts
    training fields to the names listed)."""
    declare(parser, _plain(
        ("--data", {"required": True, "nargs": "+", "metavar": "STORE", "help": data_help}),
        ("--out", {"required": True, "help": out_help}),
        ("--resume", {"action": "store_true", "help": "continue the run in --out from its last checkpoint"}),
    ) + extra + [DEVICE, CONFIG_FILE])
    declare(parser.add_argument_group(f"training ({train_cls.__name__})"), config_options(train_cls, choices=choices))
    declare(parser.add_argument_group(f"architecture of a new model ({architecture_cls.__name__})"),
            config_options(architecture_cls, skip=skip))


def add_train(parser: argparse.ArgumentParser) -> None:
    from worldvid.model import WorldModelConfig
    from worldvid.model.frame_loss import REGRESSION_LOSSES
    from worldvid.train import TrainConfig
    from worldvid.train_distributed import DistributedConfig

    _add_training(parser, TrainConfig, WorldModelConfig, MODEL_FROM_DATA,
                  "episode store folder(s) (worldvid collect, or worldvid plan --record) at one frame size; stores of "
                  "several tasks train one multi-task model",
                  "run folder: checkpoints, metrics, the model",
                  _plain(("--init", {"metavar": "RUN", "help": "start from this run's (or model folder's) weights: "
                                     "fine-tuning"})), choices={"regression_loss": list(REGRESSION_LOSSES)})
    declare(parser.add_argument_group("data-parallel training on Ray Train (DistributedConfig)"),
            config_options(DistributedConfig))


def add_train_cost(parser: argparse.ArgumentParser) -> None:
    from worldvid.goal_distance import GoalDistanceConfig, GoalDistanceTrainConfig

    _add_training(parser, GoalDistanceTrainConfig, GoalDistanceConfig, COST_FROM_DATA,
                  "episode store folder(s) of one task: only their frames and the frames' order are read",
                  "cost run folder: checkpoints, metrics, the distance model", [])


COST_REPORT_HELP = {
    "env_id": "task id, e.g. worldvid/Push-v0",
    "out": "folder for diagnostics.json and heat_map.png",
    "size": "frame size (a learned cost's own)",
    "episodes": "scripted-expert episodes (steps-to-go correlation, descent share)",
    "pairs": "random state pairs (state-distance correlation)",
    "seed": "first env seed (far from any training data's)",
    "grid": "heat-map cells per side",
}


def add_cost_report(parser: argparse.ArgumentParser) -> None:
    from worldvid.costs import COSTS
    from worldvid.experiments.cost_diagnostics import diagnose_costs

    declare(parser, function_options(diagnose_costs, COST_REPORT_HELP) + _plain(
        ("--costs", {"nargs": "+", "choices": list(COSTS), "default": ["keypoint", "blur", "learned"],
                     "help": "costs to compare (default: %(default)s; learned is skipped without --cost-model)"}),
        (flag("cost_model"), {"dest": "cost_model", "help": "run folder of a learned goal distance"}),
    ) + [DEVICE])


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    declare(parser, function_options(run_open_loop_evaluation, EVALUATE_HELP) + [DEVICE])


EXPLAIN_HELP = {
    "run": MODEL_HELP,
    "out": "folder for report.html, report.json, the PNGs and the counterfactual-action GIF",
    "data": "episode store; default: the run's own data, held-out episodes only",
}


def add_explain(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.explain import ExplainConfig, explain_model
    from worldvid.explain.factorial import ACTION_BASELINES

    options = function_options(explain_model, EXPLAIN_HELP)
    options[0] = Option("--model", {**options[0].kwargs, "dest": "run"})
    declare(parser, options + [DEVICE])
    declare(parser.add_argument_group("what is measured (ExplainConfig)"),
            config_options(ExplainConfig, choices={"action_baseline": ACTION_BASELINES}))


def add_render(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.render import render_open_loop

    declare(parser, function_options(render_open_loop, RENDER_HELP) + [DEVICE])


def _add_planner_options(parser: argparse.ArgumentParser) -> None:
    from worldvid.agents import PlannerConfig
    from worldvid.agents.planner_config import WARM_TAILS
    from worldvid.costs import REDUCTIONS

    declare(parser.add_argument_group("search budget and hyper-parameters (PlannerConfig)"),
            config_options(PlannerConfig, choices={"reduce": REDUCTIONS, "warm_tail": WARM_TAILS}))


def add_plan(parser: argparse.ArgumentParser) -> None:
    from worldvid.agents import PLANNER_NAMES
    from worldvid.costs import COSTS
    from worldvid.experiments.plan_config import PlanEvalConfig

    declare(parser, _plain(
        ("--out", {"required": True, "help": "folder for summary.json and episodes/*.npz"}),
        ("--video", {"action": "store_true", "help": "also write real | imagined | goal videos"}),
        ("--record", {"metavar": "STORE", "help": "also write the executed episodes as an episode store"}),
        ("--address", {"help": "Ray cluster address, e.g. 'auto' (default: RAY_ADDRESS if set, else local)"}),
    ) + [DEVICE, CONFIG_FILE])
    declare(parser, config_options(PlanEvalConfig, skip=PLAN_OWN, choices={"planner": PLANNER_NAMES, "cost": COSTS}))
    _add_planner_options(parser)


def add_table(parser: argparse.ArgumentParser) -> None:
    declare(parser, _plain(("dirs", {"nargs": "+", "metavar": "DIR", "help": "out folders of worldvid plan"}),
                           ("--commands", {"action": "store_true",
                                           "help": "also print the worldvid plan command that reproduces each row"})))


def add_dagger(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.dagger import DaggerConfig

    declare(parser, [DEVICE, CONFIG_FILE] + config_options(DaggerConfig, skip=PLAN_OWN))
    _add_planner_options(parser)


def add_sweep(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.sweep import FIXED_DEFAULTS, MODEL_GRID, PLANNER_GRID

    planner, model = FIXED_DEFAULTS["planner"], FIXED_DEFAULTS["model"]
    declare(parser, _plain(
        ("--family", {"choices": ["planner", "model"], "default": "planner", "help": "what to sweep (default: planner)"}),
        ("--out", {"required": True, "help": "sweep folder; rerunning the command resumes the sweep in it"}),
        ("--address", {"help": "Ray cluster address (default: RAY_ADDRESS if set, else local)"}),
        (flag("max_concurrent"), {"dest": "max_concurrent", "type": int, "default": 2, "help": "trials at once (default: 2)"}),
        ("--seed", {"type": int, "default": planner["seed"], "help": f"base seed (default: {planner['seed']})"}),
    ) + [DEVICE])
    declare(parser.add_argument_group("planner family"), _plain(
        ("--model", {"help": "training run folder"}),
        (flag("env_id"), {"dest": "env_id", "help": "task id"}),
        ("--cost", {"default": planner["cost"], "help": f"goal-image cost (default: {planner['cost']})"}),
        (flag("cost_model"), {"dest": "cost_model", "help": "run folder of a learned goal distance, for --cost learned"}),
        ("--episodes", {"type": int, "default": planner["episodes"], "help": "episodes per trial (default: %(default)s)"}),
        (flag("max_steps"), {"dest": "max_steps", "type": int, "help": "cap on steps per episode (default: the task's)"}),
        ("--planners", {"nargs": "+", "default": PLANNER_GRID["planner"], "help": "grid: planners (default: %(default)s)"}),
        (flag("num_steps"), {"dest": "num_steps", "type": int, "nargs": "+", "default": PLANNER_GRID["num_steps"],
                             "help": "grid: denoising steps per imagined frame (default: %(default)s)"}),
        ("--candidates", {"type": int, "nargs": "+", "default": PLANNER_GRID["candidates"],
                          "help": "grid: candidates (default: %(default)s)"}),
        ("--horizons", {"type": int, "nargs": "+", "default": PLANNER_GRID["horizon"], "help": "grid: horizons (default: %(default)s)"}),
    ))
    declare(parser.add_argument_group("model family"), _plain(
        ("--data", {"help": "episode store"}),
        (flag("steps"), {"dest": "steps", "type": int, "default": model["steps"],
                         "help": "training steps per trial (default: %(default)s)"}),
        ("--channels", {"nargs": "+", "default": [",".join(map(str, c)) for c in MODEL_GRID["channels"]],
                        "help": "grid: UNet widths per level, e.g. 16,32,64 (default: %(default)s)"}),
    ))


def add_bench(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.bench import SECTIONS

    declare(parser, _plain(
        ("--sections", {"nargs": "+", "choices": list(SECTIONS), "help": "sections to run (default: all)"}),
        ("--out", {"help": "folder for bench.json (default: only print the table)"}),
    ) + [DEVICE])


def add_demo(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.pipeline import DemoConfig

    declare(parser, [DEVICE, CONFIG_FILE] + config_options(DemoConfig, skip=("device",)))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; only ``command``'s options are declared (all of them when None)."""
    parser = argparse.ArgumentParser(prog="worldvid", description="worldvid: a text-free video world model for "
                                     "decision making. `worldvid COMMAND --help` lists a command's options.")
    parser.add_argument("--version", action="version", version=f"worldvid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: dict[str, Callable[[argparse.ArgumentParser], None]] = {
        name: globals()[f"add_{name.replace('-', '_')}"] for name in COMMANDS}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            adders[name](p)
    return parser


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand inside ``build_parser``'s result."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[command]

"""Subcommands about tasks, data and the world model: envs, collect, train, evaluate, render.

Each command has ``add(parser)``, which declares its options (importing the library only for that command),
and ``run(args) -> exit code``.
"""

from __future__ import annotations

import argparse

from worldvid.cli.options import add_config_file_option, add_config_options, add_function_options, print_rows, values

DEVICE_HELP = "torch device of the model, e.g. cpu, cuda, cuda:1 (default: CUDA when present, else CPU)"
MODEL_HELP = "training run folder (worldvid train --out) or a model folder"


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` for a command that runs a model."""
    parser.add_argument("--device", help=DEVICE_HELP)


# ---------------------------------------------------------------------------- envs
def add_envs(parser: argparse.ArgumentParser) -> None:
    pass


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


# ---------------------------------------------------------------------------- collect
COLLECT_HELP = {
    "env_id": "Gymnasium id, e.g. worldvid/PointReach-v0 or Reacher-v5",
    "num_episodes": "number of episodes; episode i uses seed S+i",
    "out": "store folder (re-running into it completes what is missing)",
    "workers": "parallel Ray workers (1: in this process)",
    "policy": "collection policy",
    "size": "frame height and width in pixels",
    "seed": "base seed S",
    "episodes_per_shard": "episodes per HDF5 shard file",
}


def add_collect(parser: argparse.ArgumentParser) -> None:
    from worldvid.data.collect import collect
    from worldvid.data.policies import POLICIES

    add_function_options(parser, collect, COLLECT_HELP, choices={"policy": sorted(POLICIES)})


def run_collect(args: argparse.Namespace) -> int:
    from worldvid.data.collect import collect

    report = collect(**values(args, COLLECT_HELP))
    summary = report.store.summary()
    summary.update(new_episodes=report.new_episodes, seconds=round(report.seconds, 3),
                   frames_per_second=round(report.frames_per_second, 1) if report.new_frames else None)
    print_rows(summary)
    return 0


# ---------------------------------------------------------------------------- train
MODEL_FROM_DATA = ("action_dim", "frame_size", "channels", "env_id")
"""WorldModelConfig fields the data decides (not options)."""


def add_train(parser: argparse.ArgumentParser) -> None:
    from worldvid.model import WorldModelConfig
    from worldvid.train import TrainConfig

    parser.add_argument("--data", required=True, nargs="+", metavar="STORE",
                        help="episode store folder(s) (worldvid collect, or worldvid plan --record) of one task")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, metrics, the model")
    parser.add_argument("--init", metavar="RUN", help="start from this run's (or model folder's) weights: fine-tuning")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_device(parser)
    add_config_file_option(parser)
    add_config_options(parser.add_argument_group("training (TrainConfig)"), TrainConfig)
    add_config_options(parser.add_argument_group("architecture of a new model (WorldModelConfig)"),
                       WorldModelConfig, skip=MODEL_FROM_DATA)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from worldvid.data.store import EpisodeStore
    from worldvid.model import WorldModelConfig
    from worldvid.train import TrainConfig, train

    train_config = TrainConfig(**values(args, [f.name for f in dataclasses.fields(TrainConfig)]))
    architecture = values(args, [f.name for f in dataclasses.fields(WorldModelConfig) if f.name not in MODEL_FROM_DATA])
    model_config = None
    if not args.resume and not args.init:
        spec = EpisodeStore(args.data[0]).spec
        model_config = WorldModelConfig(action_dim=spec.action_dim, frame_size=spec.frame_shape[0],
                                        env_id=spec.env_id, **architecture)
    summary = train(args.data, args.out, train_config, model_config=model_config, resume=args.resume,
                    init_from=args.init, device=args.device)
    print_rows(summary)
    return 0


# ---------------------------------------------------------------------------- evaluate
EVALUATE_HELP = {
    "model": MODEL_HELP,
    "data": "episode store; default: the run's own data, held-out episodes only",
    "rollout_steps": "imagined steps per open-loop window",
    "out": "folder for eval.json (default: the run folder)",
    "controllability_seeds": "env seeds of the controllability check (0: skip)",
    "max_episodes": "held-out episodes to cut windows from, at most",
    "seed": "sampler noise seed",
}


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    add_function_options(parser, run_open_loop_evaluation, EVALUATE_HELP)
    add_device(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    run_open_loop_evaluation(**values(args, EVALUATE_HELP), device=args.device)
    return 0


# ---------------------------------------------------------------------------- render
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


def add_render(parser: argparse.ArgumentParser) -> None:
    from worldvid.experiments.render import render_open_loop

    add_function_options(parser, render_open_loop, RENDER_HELP)
    add_device(parser)


def run_render(args: argparse.Namespace) -> int:
    from worldvid.experiments.render import render_open_loop

    rows = render_open_loop(**values(args, RENDER_HELP), device=args.device)
    print(f"{'episode':>7} {'steps':>5} {'mean PSNR':>9} {'final':>6}  video")
    for row in rows:
        print(f"{row['episode']:7d} {row['horizon']:5d} {row['mean_psnr']:9.2f} {row['final_psnr']:6.2f}  {row['video']}")
    return 0

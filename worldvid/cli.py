"""The ``worldvid`` console script. The command line is parsed here and nowhere else in the library."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from worldvid.envs import TASKS

    print(f"{'id':28s} {'action':>6s} {'steps':>5s}  goal object")
    for env_id in TASKS:
        spec = gym.spec(env_id)
        cls = gym.envs.registration.load_env_creator(spec.entry_point)
        env = gym.make(env_id, size=16)
        print(f"{env_id:28s} {env.action_space.shape[0]:6d} {spec.max_episode_steps:5d}  {getattr(cls, 'goal_object', '-')}")
        env.close()
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from worldvid.data.collect import collect

    report = collect(
        env_id=args.env,
        num_episodes=args.episodes,
        out=args.out,
        workers=args.workers,
        policy=args.policy,
        size=args.size,
        seed=args.seed,
        episodes_per_shard=args.episodes_per_shard,
    )
    summary = report.store.summary()
    summary.update(
        new_episodes=report.new_episodes,
        seconds=round(report.seconds, 3),
        frames_per_second=round(report.frames_per_second, 1) if report.new_frames else None,
    )
    _print_table(summary)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from worldvid.model import WorldModelConfig
    from worldvid.train import TrainConfig, train

    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "seed", "checkpoint_every", "num_workers") if getattr(args, k) is not None}
    if args.no_autocast:
        overrides["autocast"] = False
    model_config = None
    if args.channels and not args.resume:
        from worldvid.data.store import EpisodeStore

        spec = EpisodeStore(args.data[0]).spec
        model_config = WorldModelConfig(action_dim=spec.action_dim, frame_size=spec.frame_shape[0], env_id=spec.env_id,
                                        block_channels=tuple(args.channels))
    if args.data_weights:
        overrides["data_weights"] = tuple(args.data_weights)
    summary = train(args.data, args.out, TrainConfig(**overrides), model_config=model_config, resume=args.resume,
                    init_from=args.init)
    _print_table(summary)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    run_open_loop_evaluation(args.model, args.data, horizon=args.horizon, out=args.out, controllability_seeds=args.control_seeds)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from worldvid.experiments.pipeline import DemoConfig, run_demo

    fields = ("env", "out", "size", "episodes", "workers", "steps", "plan_episodes", "plan_max_steps", "channels", "seed")
    given = {("env_id" if k == "env" else k): getattr(args, k) for k in fields if getattr(args, k) is not None}
    if "channels" in given:
        given["channels"] = tuple(given["channels"])
    run_demo(DemoConfig(**given))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from worldvid.experiments.sweep import run_sweep

    if args.family == "planner":
        if not (args.model and args.env):
            raise ValueError("the planner sweep needs --model and --env")
        fixed = {"env_id": args.env, "model": args.model, "cost": args.cost, "episodes": args.episodes, "seed": args.seed,
                 "max_steps": args.max_steps}
        grid = {"planner": args.planners, "num_steps": args.num_steps, "candidates": args.candidates, "horizon": args.horizons}
    else:
        if not args.data:
            raise ValueError("the model sweep needs --data")
        fixed = {"data": args.data, "steps": args.steps, "seed": args.seed}
        grid = {"channels": [[int(c) for c in spec.split(",")] for spec in args.channels]}
    run_sweep(args.family, args.out, fixed, grid, address=args.address, max_concurrent=args.concurrent)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from worldvid.experiments.bench import run_bench

    run_bench(args.sections, out=args.out)
    return 0


def _print_table(rows: dict) -> None:
    width = max(map(len, rows))
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:{width}s}  {value}")


def _add_collect(sub: argparse._SubParsersAction) -> None:
    from worldvid.data.policies import POLICIES

    p = sub.add_parser("collect", help="collect episodes of an env into an HDF5 episode store (Ray-parallel)")
    p.add_argument("--env", required=True, help="Gymnasium id, e.g. worldvid/PointReach-v0 or Reacher-v5")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes; episode i uses seed S+i")
    p.add_argument("--out", required=True, help="store folder (re-running into it completes what is missing)")
    p.add_argument("--workers", type=int, default=1, help="parallel Ray workers (1: in this process)")
    p.add_argument("--policy", default="mixed", choices=sorted(POLICIES), help="collection policy")
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    p.add_argument("--seed", type=int, default=0, help="base seed S")
    p.add_argument("--episodes-per-shard", type=int, default=10, help="episodes per HDF5 shard file")
    p.set_defaults(func=_cmd_collect)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a world model on an episode store (resumable)")
    p.add_argument("--data", required=True, nargs="+",
                   help="episode store folder(s) (worldvid collect, or worldvid plan --record) of one task")
    p.add_argument("--data-weights", type=float, nargs="+",
                   help="share of each batch drawn from each --data store (default: uniform over windows)")
    p.add_argument("--init", help="start from this run's (or model folder's) weights: fine-tuning")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics, the model")
    p.add_argument("--steps", type=int, help="total optimizer steps (default 4000)")
    p.add_argument("--batch-size", type=int, help="windows per step (default 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, help="seed of weights, batches and noise (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--channels", type=int, nargs="+", help="UNet widths per level (default 16 32 64)")
    p.add_argument("--no-autocast", action="store_true", help="train in fp32 instead of bf16 autocast")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="open-loop imagined rollouts vs real frames, beside copy-last-frame")
    p.add_argument("--model", required=True, help="run folder (from worldvid train) or model folder")
    p.add_argument("--data", help="episode store; default: the run's own data, held-out episodes only")
    p.add_argument("--horizon", type=int, default=16, help="imagined steps per window")
    p.add_argument("--control-seeds", type=int, default=16, help="env seeds of the controllability check (0: skip)")
    p.add_argument("--out", help="JSON file (default RUN/eval.json)")
    p.set_defaults(func=_cmd_evaluate)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on an embedded default: collect, train, evaluate, plan, render")
    p.add_argument("--env", help="task (default worldvid/PointReach-v0)")
    p.add_argument("--out", help="folder for every artefact (default runs/demo); a rerun reuses what is finished")
    p.add_argument("--size", type=int, help="frame size (default 32)")
    p.add_argument("--episodes", type=int, help="trajectories to collect (default 200)")
    p.add_argument("--workers", type=int, help="Ray workers (default 2)")
    p.add_argument("--steps", type=int, help="training steps (default 3000)")
    p.add_argument("--plan-episodes", type=int, help="planning episodes per row (default 10)")
    p.add_argument("--plan-max-steps", type=int, help="cap on steps per planning episode")
    p.add_argument("--channels", type=int, nargs="+", help="UNet widths per level (default 16 32 64)")
    p.add_argument("--seed", type=int, help="base seed (default 0)")
    p.set_defaults(func=_cmd_demo)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune sweep over planner settings or model sizes (resumable)")
    p.add_argument("--family", choices=["planner", "model"], default="planner", help="what to sweep")
    p.add_argument("--out", required=True, help="sweep folder; rerunning the command resumes the sweep in it")
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--model", help="planner family: training run folder")
    p.add_argument("--env", help="planner family: task id")
    p.add_argument("--cost", default="keypoint", help="planner family: goal-image cost")
    p.add_argument("--episodes", type=int, default=10, help="planner family: episodes per trial")
    p.add_argument("--max-steps", type=int, help="planner family: cap on steps per episode")
    p.add_argument("--planners", nargs="+", default=["cem", "mppi"], help="planner family: planners")
    p.add_argument("--num-steps", type=int, nargs="+", default=[1, 3], help="planner family: denoising steps")
    p.add_argument("--candidates", type=int, nargs="+", default=[16, 32], help="planner family: candidates")
    p.add_argument("--horizons", type=int, nargs="+", default=[6], help="planner family: horizons")
    p.add_argument("--data", help="model family: episode store")
    p.add_argument("--steps", type=int, default=1000, help="model family: training steps per trial")
    p.add_argument("--channels", nargs="+", default=["8,16,32", "16,32,64", "32,64,64"], help="model family: UNet widths, e.g. 16,32,64")
    p.set_defaults(func=_cmd_sweep)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput figures on this machine, as a table and JSON")
    p.add_argument("--sections", nargs="+", help="subset of: peak model sim train dream memory plan eval (default: all)")
    p.add_argument("--out", help="JSON file for the figures")
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="worldvid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list the registered worldvid tasks").set_defaults(func=_cmd_envs)
    _add_collect(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_bench(sub)
    _add_demo(sub)
    _add_sweep(sub)
    from worldvid.experiments.dagger import add_dagger_command
    from worldvid.experiments.plan_cli import add_plan_command, add_table_command
    from worldvid.experiments.render import add_render_command

    add_render_command(sub)
    add_plan_command(sub)
    add_table_command(sub)
    add_dagger_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``worldvid`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Expected failures (bad input, missing or corrupt files) end with one clear line, not a traceback.
        print(f"worldvid {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

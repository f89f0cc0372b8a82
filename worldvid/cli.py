"""The ``worldvid`` console script. The command line is parsed here and nowhere else in the library."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from envs import TASKS

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


def _print_table(rows: dict) -> None:
    width = max(map(len, rows))
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:{width}s}  {value}")


def _add_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="collect episodes of an env into an HDF5 episode store (Ray-parallel)")
    p.add_argument("--env", required=True, help="Gymnasium id, e.g. worldvid/PointReach-v0 or Reacher-v5")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes; episode i uses seed S+i")
    p.add_argument("--out", required=True, help="store folder (re-running into it completes what is missing)")
    p.add_argument("--workers", type=int, default=1, help="parallel Ray workers (1: in this process)")
    p.add_argument("--policy", default="mixed", choices=["random", "scripted", "mixed"], help="collection policy")
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    p.add_argument("--seed", type=int, default=0, help="base seed S")
    p.add_argument("--episodes-per-shard", type=int, default=10, help="episodes per HDF5 shard file")
    p.set_defaults(func=_cmd_collect)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="worldvid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list the registered worldvid tasks").set_defaults(func=_cmd_envs)
    _add_collect(sub)
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

"""Decision latency of several planner budgets side by side: the same model, start and goal, one torch thread.

``python -m worldvid.experiments.bench_budgets --env worldvid/Push-v0 --model runs/push32s --out FILE.json``
times CEM (keypoint cost, or ``--cost learned --cost-model COSTRUN``; 1 Euler step) at the default budget and at iCEM budgets (``BUDGETS``) in interleaved
rounds, so that a disturbance of the machine touches every budget alike; reports the median seconds per
decision and the frames each decision imagines. Success at a budget is measured with ``worldvid plan``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldvid.agents import PlannerConfig
from worldvid.atomic import write_json_atomic

BUDGETS: dict[str, PlannerConfig] = {
    "32x6x2": PlannerConfig(),
    "32x6x2 decay0.5 keep4": PlannerConfig(population_decay=0.5, keep_elites=4),
    "16x6x3 decay0.5 keep4": PlannerConfig(candidates=16, iterations=3, population_decay=0.5, keep_elites=4),
    "16x6x2 keep4": PlannerConfig(candidates=16, keep_elites=4),
    "12x4x3 decay0.5 keep4": PlannerConfig(candidates=12, horizon=4, iterations=3, population_decay=0.5, keep_elites=4),
}


def time_budgets(env_id: str, model_path: str, budgets: dict[str, PlannerConfig] = BUDGETS, rounds: int = 5,
                 decisions: int = 3, seed: int = 5000, cost: str = "keypoint",
                 cost_model: str | None = None) -> dict[str, dict[str, float]]:
    """{budget: {"s_per_decision_median", "frames"}} for CEM with each budget and ``cost`` (a learned one from
    ``cost_model``), one torch thread, interleaved."""
    from worldvid.agents import make_planner
    from worldvid.agents import History, WorldModelDynamics
    from worldvid.costs import make_cost
    from worldvid.envs.factory import make_pixel_env
    from worldvid.run_folder import RunFolder

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = RunFolder.of(model_path).load_model(device="cpu")
        env = make_pixel_env(env_id, model.config.frame_size)
        frame, info = env.reset(seed=seed)
        history = History.start(frame, model.config.context, int(env.action_space.shape[0]))
        planners = {name: make_planner("cem", WorldModelDynamics(model, num_steps=1), make_cost(cost, env_id, cost_model=cost_model),
                                       env.action_space.low, env.action_space.high, config)
                    for name, config in budgets.items()}
        times: dict[str, list[float]] = {name: [] for name in budgets}
        for planner in planners.values():  # warm-up
            planner.plan(history, info["goal_frame"])
        for _ in range(rounds):
            for name, planner in planners.items():
                start = time.perf_counter()
                for _ in range(decisions):
                    planner.plan(history, info["goal_frame"])
                times[name].append((time.perf_counter() - start) / decisions)
    finally:
        torch.set_num_threads(previous)
    return {name: {"s_per_decision_median": float(np.median(times[name])),
                   "frames": float(budgets[name].imagined_per_decision)} for name in budgets}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--model", required=True, help="run or model folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cost", default="keypoint", help="goal-image cost (worldvid.costs)")
    parser.add_argument("--cost-model", help="learned goal-distance run, for --cost learned")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)
    result = time_budgets(args.env, args.model, rounds=args.rounds, cost=args.cost, cost_model=args.cost_model)
    for name, row in result.items():
        print(f"{name:24s} frames {row['frames']:5.0f}  s/decision {row['s_per_decision_median']:.3f}")
    if args.out:
        write_json_atomic(args.out, {"env_id": args.env, "model": args.model, "cost": args.cost,
                                     "cost_model": args.cost_model, **result})


if __name__ == "__main__":
    main()

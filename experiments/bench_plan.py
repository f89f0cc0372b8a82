"""Bench sections for decision making: each planner's decision latency, and evaluation episodes/s with 1 and 2
Ray workers. Both run the real evaluation path (``experiments.plan_eval.evaluate_planner``) on short episodes.

Without a trained run the default 32x32 world model with fresh weights is used: imagination costs the same
whatever the weights, so latencies and throughput are those of a trained model of that configuration.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from worldvid.agents import PLANNER_NAMES, PlannerConfig
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.parallel import init_ray

BENCH_ENV = "worldvid/PointReach-v0"


@contextmanager
def model_folder(model: str | os.PathLike | None, env_id: str) -> Iterator[str]:
    """The given run/model folder, or a temporary folder holding a fresh default-config model for ``env_id``."""
    if model is not None:
        yield str(model)
        return
    from worldvid.model import WorldModel, WorldModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        WorldModel(WorldModelConfig(action_dim=2, env_id=env_id)).save_pretrained(Path(tmp) / "model")
        yield str(Path(tmp) / "model")


def bench_planners(model: str | os.PathLike | None = None, env_id: str = BENCH_ENV, decisions: int = 6,
                   planner_config: PlannerConfig | None = None, device: str | None = None) -> dict[str, float]:
    """Seconds per decision of every planner at the default budget (``PlannerConfig()``), imagining with the model
    on ``device`` (None: CUDA when present, else CPU).

    One episode of ``decisions`` decisions per planner, in this process with one torch thread, as one evaluation
    worker runs. Keys: ``decision_s_<planner>``, plus ``planner_candidates``, ``planner_horizon`` and
    ``planner_iterations`` (the budget).
    """
    config = planner_config or PlannerConfig()
    out: dict[str, float] = {"planner_candidates": float(config.candidates), "planner_horizon": float(config.horizon),
                             "planner_iterations": float(config.iterations)}
    with model_folder(model, env_id) as folder:
        for planner in PLANNER_NAMES:
            run = PlanEvalConfig(env_id=env_id, planner=planner, model=folder, episodes=1, max_steps=decisions,
                                 stop_on_success=False, planner_config=config, device=device)
            summary = evaluate_planner(run, progress=False).summary
            out[f"decision_s_{planner}"] = summary["seconds_per_decision"]
    return out


def bench_eval_scaling(model: str | os.PathLike | None = None, env_id: str = BENCH_ENV, episodes: int = 6,
                       steps: int = 10, workers: tuple[int, ...] = (1, 2), lockstep: tuple[int, ...] = (3,),
                       planner_config: PlannerConfig | None = None, device: str | None = None) -> dict[str, float]:
    """Evaluation episodes/s and s/decision of CEM over the world model (on ``device``; None: CUDA when present,
    else CPU) with 1 and 2 Ray workers, each planning one episode at a time and ``lockstep`` episodes at a time.

    ``episodes`` episodes of ``steps`` decisions each; Ray is started (2 CPUs, locally) before the clock starts,
    so the figure holds actor start-up and model loading but not Ray's own start. Keys: ``eval_episodes_per_s_
    <W>_workers``, ``eval_decision_s_<W>_workers`` and ``eval_speedup_<W>_workers`` (against 1 worker); per
    lockstep size B: ``eval_episodes_per_s_<W>_workers_lockstep_<B>`` and ``eval_lockstep_speedup_<W>_workers_<B>``
    (against W workers without lockstep).
    """
    init_ray(num_cpus=max(workers))  # before the clock starts
    out: dict[str, float] = {}
    with model_folder(model, env_id) as folder:
        base = PlanEvalConfig(env_id=env_id, planner="cem", model=folder, episodes=episodes, max_steps=steps,
                              stop_on_success=False, planner_config=planner_config or PlannerConfig(), device=device)
        for w in workers:
            summary = evaluate_planner(replace(base, workers=w), progress=False).summary
            out[f"eval_episodes_per_s_{w}_workers"] = summary["episodes_per_second"]
            out[f"eval_decision_s_{w}_workers"] = summary["seconds_per_decision"]
            for b in lockstep:
                summary = evaluate_planner(replace(base, workers=w, lockstep=b), progress=False).summary
                out[f"eval_episodes_per_s_{w}_workers_lockstep_{b}"] = summary["episodes_per_second"]
                out[f"eval_lockstep_speedup_{w}_workers_{b}"] = (summary["episodes_per_second"]
                                                                 / out[f"eval_episodes_per_s_{w}_workers"])
        first = out[f"eval_episodes_per_s_{workers[0]}_workers"]
        for w in workers[1:]:
            out[f"eval_speedup_{w}_workers"] = out[f"eval_episodes_per_s_{w}_workers"] / first
    return out

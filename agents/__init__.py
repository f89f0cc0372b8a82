"""Planners that decide by imagining video: random shooting, CEM, MPPI, the simulator oracle, the MPC loop.

Library code only (no Ray, no command line); ``experiments/plan_eval.py`` runs them over many episodes.
"""

from __future__ import annotations

import numpy as np

from worldvid.agents.base import Dynamics, History, Plan, Planner, SamplingPlanner
from worldvid.agents.cem import CEMPlanner
from worldvid.agents.lockstep import plan_together
from worldvid.agents.mpc import EpisodeResult, run_episode, run_lockstep, summarize_episodes, wilson_interval
from worldvid.agents.mppi import MPPIPlanner
from worldvid.agents.oracle import SimulatorDynamics
from worldvid.agents.planner_config import PlannerConfig
from worldvid.agents.random_shooting import RandomPlanner, RandomShootingPlanner
from worldvid.agents.world_model_dynamics import WorldModelDynamics
from worldvid.costs import Cost

PLANNERS: dict[str, type[SamplingPlanner]] = {"cem": CEMPlanner, "mppi": MPPIPlanner, "shooting": RandomShootingPlanner}
"""Sampling planners by the names ``worldvid plan --planner`` uses (plus ``random``, which needs no dynamics)."""

PLANNER_NAMES = (*PLANNERS, "random")


def make_planner(name: str, dynamics: Dynamics | None, cost: Cost | None, action_low: np.ndarray,
                 action_high: np.ndarray, config: PlannerConfig = PlannerConfig(),
                 seed: int = 0) -> SamplingPlanner | RandomPlanner:
    """A planner by name (one of ``PLANNER_NAMES``); ``random`` ignores dynamics and cost."""
    if name == "random":
        return RandomPlanner(action_low, action_high, horizon=config.horizon, seed=seed)
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; choose one of {list(PLANNER_NAMES)}")
    if dynamics is None or cost is None:
        raise ValueError(f"planner {name!r} needs dynamics (a world model or the oracle) and a cost")
    return PLANNERS[name](dynamics, cost, action_low, action_high, config, seed)


__all__ = [
    "PLANNERS", "PLANNER_NAMES", "CEMPlanner", "Dynamics", "EpisodeResult", "History", "MPPIPlanner", "Plan",
    "Planner", "PlannerConfig", "RandomPlanner", "RandomShootingPlanner", "SamplingPlanner", "SimulatorDynamics",
    "WorldModelDynamics", "make_planner", "plan_together", "run_episode", "run_lockstep", "summarize_episodes", "wilson_interval",
]

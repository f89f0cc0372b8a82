"""Random shooting: score independent random action sequences, execute the best (no distribution update)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldvid.agents.base import History, Plan, SamplingPlanner, SearchState


class RandomShootingPlanner(SamplingPlanner):
    """Every iteration draws ``candidates`` fresh sequences uniformly from the action box (AR(1)-correlated
    along the horizon like the other planners' noise); the best one seen (the shifted previous plan included,
    with warm start) is executed. The same budget as CEM / MPPI, without their refinement."""

    name = "shooting"

    def _sample(self, state: SearchState, iteration: int, count: int) -> Tensor:
        # The correlated normal noise mapped through its CDF is uniform on [0, 1] per entry.
        uniform = 0.5 * (1.0 + torch.erf(self._noise(count) / 2.0**0.5))
        return self.low + (self.high - self.low) * uniform


class RandomPlanner:
    """The random-action baseline: AR(1)-correlated random actions (``CorrelatedNoisePolicy``), no imagination.

    Same interface as the sampling planners; ``plan`` returns ``horizon`` random actions and no imagined video.
    """

    name = "random"

    def __init__(self, action_low: np.ndarray, action_high: np.ndarray, horizon: int = 1, seed: int = 0,
                 beta: float = 0.8) -> None:
        from types import SimpleNamespace

        import gymnasium as gym

        from worldvid.data.policies import CorrelatedNoisePolicy

        if horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        self.horizon = int(horizon)
        self._space = SimpleNamespace(action_space=gym.spaces.Box(np.asarray(action_low, np.float32),
                                                                  np.asarray(action_high, np.float32)))
        self._policy = CorrelatedNoisePolicy(beta=beta)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self._policy.reset(self._space, np.random.default_rng([0 if seed is None else int(seed), 0xACE]))

    def act(self, history: History, goal_frame: np.ndarray) -> np.ndarray:
        """A random action, float32 [A]."""
        return np.asarray(self._policy(None), np.float32)

    def plan(self, history: History, goal_frame: np.ndarray, shift: int = 1, remaining: int | None = None) -> Plan:
        """``horizon`` random actions float32 [horizon, A]; no imagination (imagined None, 0 model calls); the time
        left (``remaining``) does not matter to them."""
        actions = np.stack([self.act(history, goal_frame) for _ in range(self.horizon)])
        return Plan(actions, None, float("nan"), 0, 0.0)

"""The oracle: the same planners and costs, but candidates are rolled out in the true simulator.

Replacing the world model by the real physics (copy state, step, render) gives the success a perfect model
would allow with the same planner, cost and budget: the upper bound that isolates world-model error.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldvid.agents.base import History


class SimulatorDynamics:
    """Imagination by simulation: each candidate is stepped from a copy of ``env``'s current state and rendered.

    ``env`` is the env the episode runs in: a worldvid task (``get_sim_state`` / ``set_sim_state``), or an env
    wrapped by ``worldvid.envs.replayed_goals.ReplayedGoals``, which gives any Gymnasium MuJoCo env the same.
    Candidates are simulated in ``env.unwrapped`` itself (bypassing the time limit) and its exact state is
    restored afterwards, so planning leaves the episode bit-for-bit unchanged. The history is not needed (the
    true state is), but accepted for the common interface. ``calls`` counts batched ``imagine`` calls.
    """

    def __init__(self, env: gym.Env) -> None:
        base = env if _has_sim_state(env) else env.unwrapped
        if not _has_sim_state(base):
            raise ValueError(f"the oracle needs an env with get_sim_state / set_sim_state (a worldvid task, or a "
                             f"MuJoCo env with goals replayed from episodes), got {env}")
        self.env = base
        self._task = base is env.unwrapped  # a task steps to its observation; a wrapper simulates, then renders
        self.calls = 0

    def reset(self, seed: int) -> None:
        self.calls = 0

    def imagine(self, history: History, actions: Tensor) -> Tensor:
        """actions float [N, H, A] -> uint8 [N, H, h, w, 3]: the frames the real simulator renders."""
        actions = np.asarray(torch.as_tensor(actions, dtype=torch.float32).cpu())
        if actions.ndim != 3:
            raise ValueError(f"actions must be [N, H, A], got {actions.shape}")
        saved = self.env.get_sim_state()
        frames = np.empty((*actions.shape[:2], *self.env.observation_space.shape), np.uint8)
        try:
            for n, sequence in enumerate(actions):
                self.env.set_sim_state(saved)
                for h, action in enumerate(sequence):
                    frames[n, h] = self._step(action)
        finally:
            self.env.set_sim_state(saved)
        self.calls += 1
        return torch.from_numpy(frames)

    def imagine_last(self, history: History, actions: Tensor) -> Tensor:
        """actions float [N, H, A] -> uint8 [N, 1, h, w, 3]: only the frame each candidate ends in, equal to
        ``imagine(...)[:, -1:]`` but without rendering the frames in between (for costs that read the last frame)."""
        actions = np.asarray(torch.as_tensor(actions, dtype=torch.float32).cpu())
        if actions.ndim != 3:
            raise ValueError(f"actions must be [N, H, A], got {actions.shape}")
        saved = self.env.get_sim_state()
        frames = np.empty((actions.shape[0], 1, *self.env.observation_space.shape), np.uint8)
        try:
            for n, sequence in enumerate(actions):
                self.env.set_sim_state(saved)
                for action in sequence:
                    self.env.simulate(action)
                frames[n, 0] = self.env.render_observation()
        finally:
            self.env.set_sim_state(saved)
        self.calls += 1
        return torch.from_numpy(frames)

    def _step(self, action: np.ndarray) -> np.ndarray:
        """Simulate ``action`` and return the frame it leads to, uint8 [h, w, 3]."""
        if self._task:
            return self.env.step(action)[0]
        self.env.simulate(action)
        return self.env.render_observation()


def _has_sim_state(env: gym.Env) -> bool:
    return all(hasattr(env, name) for name in ("get_sim_state", "set_sim_state", "simulate", "render_observation"))

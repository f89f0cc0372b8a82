"""One dream's state, shared by ``DreamEnv`` and ``DreamVectorEnv``: where it starts (K context frames and actions
from a trajectory store, or from a real reset of the task), the window it advances as it runs (``Dream``) and how
its frames score against its goal (``DreamScore``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from worldvid.envs.goal_conditioned import goal_observation, success_info
from worldvid.model import WorldModel
from worldvid.windows import advance, past_window, with_action


@dataclass
class DreamStart:
    """A dream's starting point: frames uint8 [K, H, W, 3] = f[t-K+1..t], past_actions float32 [K, A] =
    a[t-K..t-1] (``worldvid.windows``), goal uint8 [H, W, 3] or None, and where it came from (``origin``,
    JSON-able)."""

    frames: np.ndarray
    past_actions: np.ndarray
    goal: np.ndarray | None
    origin: dict[str, Any]


class StartSampler:
    """Draws dream starts from a trajectory store, or from real resets of the model's task when ``data`` is None.

    Shared by ``DreamEnv`` and ``DreamVectorEnv``: a start is a function of the ``np_random`` passed in only.
    """

    def __init__(self, model: WorldModel, data: str | os.PathLike | None = None,
                 episodes: Sequence[int] | None = None) -> None:
        self.config = model.config
        self.context = model.config.context
        self.data = None if data is None else Path(data)
        self._store = None
        self._real_env: gym.Env | None = None
        if self.data is not None:
            from worldvid.data.store import EpisodeStore

            self._store = EpisodeStore(self.data)
            spec = self._store.spec
            size = self.config.frame_size
            if tuple(spec.frame_shape) != (size, size, self.config.channels):
                raise ValueError(f"store {self.data} holds {spec.frame_shape} frames, the model makes "
                                 f"{(size, size, self.config.channels)}")
            model.check_compatible(action_dim=spec.action_dim, env_id=spec.env_id)
            self.env_id = spec.env_id
            self.action_dim = spec.action_dim  # a multi-task model's task may take fewer than config.action_dim
            available = self._store.episode_ids
            self.episodes = list(available) if episodes is None else [int(e) for e in episodes]
            missing = sorted(set(self.episodes) - set(available))
            if missing or not self.episodes:
                raise ValueError(f"store {self.data}: episodes {missing[:5] or '(none given)'} are not in it")
        else:
            if episodes is not None:
                raise ValueError("episodes= selects episodes of a store; pass data= too")
            if self.config.multi_task:
                raise ValueError(f"the model was trained on several tasks ({', '.join(self.config.tasks)}): pass "
                                 "data=STORE of the one to dream")
            if self.config.env_id is None:
                raise ValueError("the model's config names no env_id, so Dream-v0 cannot reset from its task: pass data=STORE")
            self.env_id = self.config.env_id
            self.action_dim = self.config.action_dim
            self.episodes = []

    def draw(self, np_random: np.random.Generator) -> DreamStart:
        """A start drawn with ``np_random`` (its only source of randomness)."""
        return self._from_store(np_random) if self._store is not None else self._from_task(np_random)

    def _from_store(self, np_random: np.random.Generator) -> DreamStart:
        episode = self.episodes[int(np_random.integers(len(self.episodes)))]
        ep = self._store.read_episode(episode)
        t = int(np_random.integers(ep.num_steps + 1))  # any frame f[t], the last included
        frames, past = past_window(ep.frames, ep.actions, t, self.context)
        return DreamStart(frames, past, ep.goal_frame, {"source": "store", "episode": int(episode), "t": t})

    def _from_task(self, np_random: np.random.Generator) -> DreamStart:
        from worldvid.data.policies import CorrelatedNoisePolicy

        if self._real_env is None:
            from worldvid.envs.factory import make_pixel_env

            self._real_env = make_pixel_env(self.env_id, self.config.frame_size)
            if self._real_env.action_space.shape != (self.config.action_dim,):
                raise ValueError(f"{self.env_id} has actions {self._real_env.action_space.shape}, the model "
                                 f"action_dim={self.config.action_dim}")
        env, k = self._real_env, self.context
        seed = int(np_random.integers(2**31 - 1))
        observation, info = env.reset(seed=seed)
        policy = CorrelatedNoisePolicy()
        policy.reset(env, np.random.default_rng([seed, 0x5EED]))
        frames, actions = [observation], []
        for _ in range(k):
            actions.append(np.asarray(policy(observation), np.float32))
            observation, *_ = env.step(actions[-1])
            frames.append(observation)
        goal = info.get("goal_frame")
        context, past = past_window(np.stack(frames), np.stack(actions), k, k)  # f[1..K], a[0..K-1]
        return DreamStart(context, past, None if goal is None else np.asarray(goal, np.uint8),
                          {"source": "env", "seed": seed})

    def close(self) -> None:
        if self._real_env is not None:
            self._real_env.close()
            self._real_env = None
        if self._store is not None:
            self._store.close()


@dataclass
class Dream:
    """The running state of one dream: the last K frames uint8 [K, H, W, 3] = f[t-K+1..t], the K actions that led
    into them (``past_actions`` float32 [K, A] = a[t-K..t-1], ``worldvid.windows``), the goal frame (uint8
    [H, W, 3] or None), the generator of its sampler noise and where it started (``origin``)."""

    frames: np.ndarray
    past_actions: np.ndarray
    goal: np.ndarray | None
    generator: torch.Generator
    origin: dict[str, Any]

    @classmethod
    def start(cls, sampler: StartSampler, np_random: np.random.Generator) -> "Dream":
        """A dream from a start drawn with ``np_random``, which also seeds its noise generator."""
        begin = sampler.draw(np_random)
        generator = torch.Generator().manual_seed(int(np_random.integers(2**63 - 1)))
        return cls(begin.frames, begin.past_actions, begin.goal, generator, begin.origin)

    def window(self, action: np.ndarray) -> np.ndarray:
        """The context actions a[t-K+1..t] for taking ``action`` now: float32 [K, A]."""
        return with_action(self.past_actions, action)

    def advance(self, frame: np.ndarray, action: np.ndarray) -> None:
        """Append the imagined ``frame`` uint8 [H, W, 3] that ``action`` float32 [A] led to."""
        self.frames, self.past_actions = advance(self.frames, self.past_actions, action, frame)

    def observation(self, goal_conditioned: bool) -> np.ndarray | dict[str, np.ndarray]:
        """The latest frame uint8 [H, W, 3] (a copy), or with ``goal_conditioned`` the dict of it and the goal
        frame (``envs/goal_conditioned.py``); ValueError when the dream has no goal frame to show."""
        if not goal_conditioned:
            return self.frames[-1].copy()
        if self.goal is None:
            raise ValueError(f"goal_conditioned=True needs goal frames, but the dream started at {self.origin} has "
                             "none: draw starts from a store (or a task) whose episodes have goal frames")
        return goal_observation(self.frames[-1], self.goal)

    def info(self) -> dict[str, Any]:
        return {"goal_frame": None if self.goal is None else self.goal.copy()}

    def reset_info(self, score: DreamScore) -> dict[str, Any]:
        """The info of a reset: ``info()``, success (scored only with a threshold) and ``origin``."""
        success = score.success(self.frames[-1], self.goal)
        return {**self.info(), **success_info(success), "origin": dict(self.origin)}


class DreamScore:
    """How a dream's frames score against its goal: reward ``-cost(frame, goal)`` for the goal-image cost named
    ``cost`` (``worldvid.costs``; 0 without goal or cost) and success ``cost <= success_cost`` (False without goal
    or threshold: Dream-v0 has no true state to judge success by)."""

    def __init__(self, cost: str | None, env_id: str, cost_model: str | os.PathLike | None = None,
                 device: torch.device | None = None, success_cost: float | None = None) -> None:
        self.name = cost
        if success_cost is not None:
            if cost is None:
                raise ValueError("success_cost needs a goal-image cost to compare with it, got cost=None")
            if isinstance(success_cost, bool) or not isinstance(success_cost, (int, float, np.number)) \
                    or not np.isfinite(success_cost):
                raise ValueError(f"success_cost must be a finite number (a {cost} cost) or None, got {success_cost!r}")
        self.success_cost = None if success_cost is None else float(success_cost)
        if cost is None:
            self._cost = None
        else:
            from worldvid.costs import make_cost

            self._cost = make_cost(cost, env_id=env_id, cost_model=None if cost_model is None else str(cost_model),
                                   device=device)

    def __call__(self, frame: np.ndarray, goal: np.ndarray | None) -> tuple[float, bool]:
        """(reward, success) of ``frame`` uint8 [H, W, 3] against ``goal`` uint8 [H, W, 3] or None."""
        if self._cost is None or goal is None:
            return 0.0, False
        cost = float(self._cost(frame, goal))
        return -cost, self.success_cost is not None and cost <= self.success_cost

    def success(self, frame: np.ndarray, goal: np.ndarray | None) -> bool:
        """Success alone (at a start); no cost is computed without a threshold."""
        return self.success_cost is not None and self(frame, goal)[1]

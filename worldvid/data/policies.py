"""Collection policies: temporally correlated random actions, a task's scripted expert, and a mix."""

from __future__ import annotations

from typing import Protocol

import gymnasium as gym
import numpy as np


class CollectionPolicy(Protocol):
    """Chooses actions while collecting; ``reset`` is called once per episode with that episode's RNG."""

    name: str

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None: ...

    def __call__(self, observation: np.ndarray) -> np.ndarray: ...


class CorrelatedNoisePolicy:
    """Random actions with AR(1) correlation: a_t = beta a_{t-1} + sqrt(1 - beta^2) * scale * eps_t, clipped.

    Correlated noise wanders across the scene instead of jittering in place as white noise does.
    Actions are float32 [A] inside the env's Box bounds.
    """

    name = "random"

    def __init__(self, beta: float = 0.8, scale: float = 1.0) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta, self.scale = beta, scale
        self._action: np.ndarray | None = None

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"worldvid needs a continuous (Box) action space, the env has {space}")
        self._rng = rng
        self._half = (space.high - space.low) / 2.0
        self._mid = (space.high + space.low) / 2.0
        self._action = np.clip(rng.uniform(-1.0, 1.0, size=space.shape) * self.scale, -1.0, 1.0)

    def step_unit(self) -> np.ndarray:
        """Advance the AR(1) process; its value in [-1, 1]^A (before mapping to the action bounds)."""
        if self._action is None:
            raise RuntimeError("call reset() before drawing actions")
        eps = self._rng.standard_normal(self._action.shape)
        self._action = np.clip(self.beta * self._action + np.sqrt(1 - self.beta**2) * self.scale * eps, -1.0, 1.0)
        return self._action

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        return (self._mid + self._half * self.step_unit()).astype(np.float32)


class ScriptedPolicy:
    """The task's goal-seeking expert (``env.unwrapped.scripted_action()``) plus small correlated noise.

    ``toward(goal)`` steers the goal object to another goal (world (x, y)) instead of the episode's.
    """

    name = "scripted"

    def __init__(self, noise: float = 0.1) -> None:
        self._noise = CorrelatedNoisePolicy(beta=0.5, scale=noise)

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        if not hasattr(env.unwrapped, "scripted_action"):
            raise ValueError(f"{env.spec.id if env.spec else env} has no scripted policy; use --policy random")
        self._env = env
        self._noise.reset(env, rng)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        return self.toward(None)

    def toward(self, goal: np.ndarray | None) -> np.ndarray:
        """The noisy expert action toward ``goal`` (None: the episode's goal): float32 [A] in the action box."""
        space = self._env.action_space
        action = self._env.unwrapped.scripted_action(goal) + self._noise.step_unit() * (space.high - space.low) / 2.0
        return np.clip(action, space.low, space.high).astype(np.float32)


class MixedPolicy:
    """Wander, then reach: correlated random actions until a random switch step, the scripted expert after.

    The switch step is uniform over the episode, so a dataset covers pure wandering, pure reaching and
    everything between, including what happens after the goal is reached.
    """

    name = "mixed"

    def __init__(self) -> None:
        self._random, self._scripted = CorrelatedNoisePolicy(), ScriptedPolicy()

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        self._random.reset(env, rng)
        self._scripted.reset(env, rng)
        horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 100
        self._switch, self._t = int(rng.integers(0, horizon + 1)), 0

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        self._t += 1
        return self._random(observation) if self._t <= self._switch else self._scripted(observation)


class SubgoalPolicy:
    """The expert chasing a chain of random sub-goals, with bursts of random actions: long, contact-rich play.

    The task's expert drives its goal object toward a sub-goal drawn by ``env.unwrapped.sample_goal_position``;
    a new one is drawn when the object gets there (within the task's success threshold) or after ``patience``
    steps. Each step a random burst (``burst`` = (min, max) steps of correlated random actions) starts with
    probability ``burst_probability``. Where the expert alone reaches the goal and then idles, this policy keeps
    the scene moving: on Push the block moves in about twice as many steps as under ``mixed``.
    """

    name = "subgoals"

    def __init__(self, patience: int = 40, burst_probability: float = 0.05, burst: tuple[int, int] = (3, 10)) -> None:
        if patience < 1 or not 0.0 <= burst_probability <= 1.0 or not 1 <= burst[0] <= burst[1]:
            raise ValueError(f"bad SubgoalPolicy settings: patience={patience}, burst={burst_probability}, {burst}")
        self.patience, self.burst_probability, self.burst = patience, burst_probability, burst
        self._random, self._scripted = CorrelatedNoisePolicy(), ScriptedPolicy()

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        task = env.unwrapped
        if not hasattr(task, "sample_goal_position"):
            raise ValueError(f"{env.spec.id if env.spec else env} cannot sample goals; use --policy mixed or random")
        self._task, self._rng = task, rng
        self._random.reset(env, rng)
        self._scripted.reset(env, rng)
        self._burst_left = 0
        self._new_subgoal()

    def _new_subgoal(self) -> None:
        self.subgoal = np.asarray(self._task.sample_goal_position(self._rng), dtype=np.float64)
        self._steps_on_subgoal = 0

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        task = self._task
        reached = task.goal_reached(self.subgoal)
        if reached or self._steps_on_subgoal >= self.patience:
            self._new_subgoal()
        self._steps_on_subgoal += 1
        if self._burst_left == 0 and self._rng.random() < self.burst_probability:
            self._burst_left = int(self._rng.integers(self.burst[0], self.burst[1] + 1))
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._random(observation)
        return self._scripted.toward(self.subgoal)


POLICIES = {"random": CorrelatedNoisePolicy, "scripted": ScriptedPolicy, "mixed": MixedPolicy, "subgoals": SubgoalPolicy}
"""Policy name -> class, as ``worldvid collect --policy`` names them."""


def expert_goal(env: gym.Env, steps: int, seed: int) -> dict:
    """Make the state the task's expert (``ScriptedPolicy``, seeded by ``seed``, heading for the episode's own
    goal) reaches ``steps`` steps after the current state the episode's goal, and return to the current state:
    DINO-WM's "N-step goals", taken from expert episodes N steps after their start (reachable in about N
    steps). Returns the info of the current state against the new goal, ``goal_frame`` included. The expert's
    steps bypass the env's wrappers (they count no episode step).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive number of expert steps, got {steps}")
    task = env.unwrapped
    if not hasattr(task, "adopt_goal"):
        raise ValueError(f"{env.spec.id if env.spec else env} cannot take a goal from an expert (a worldvid task can)")
    start = task.get_sim_state()
    policy = ScriptedPolicy()
    policy.reset(env, np.random.default_rng(seed))
    observation = None
    for _ in range(steps):
        observation = task.step(policy(observation))[0]
    goal_qpos = np.array(task.data.qpos)
    task.set_sim_state(start)
    return task.adopt_goal(goal_qpos)


def reset_with_goal(env: gym.Env, seed: int, goal_steps: int = 0) -> tuple[np.ndarray, dict]:
    """``env.reset(seed=seed)``, its goal then moved to where the expert gets ``goal_steps`` steps later
    (``expert_goal``) when ``goal_steps`` > 0; returns the first observation (uint8 [H, W, 3]) and the info
    against that goal."""
    observation, info = env.reset(seed=seed)
    if goal_steps:
        info = expert_goal(env, goal_steps, seed)
    return observation, info


def has_expert(env: gym.Env) -> bool:
    """Whether ``env`` has a scripted expert (``scripted_action``: worldvid's tasks do, Gymnasium's own envs do not)."""
    return hasattr(env.unwrapped, "scripted_action")


def policy_for_env(name: str, env: gym.Env) -> tuple[str, str | None]:
    """(the policy to collect ``env`` with, a one-line note or None): "mixed", the default, falls back to
    "random" on an env without a scripted expert (its wandering half is all such an env can have); every
    other name is kept (one that needs an expert fails at its ``reset`` with its own line)."""
    if name == "mixed" and not has_expert(env):
        env_id = env.spec.id if env.spec else type(env.unwrapped).__name__
        return "random", f"note: {env_id} has no scripted expert; collecting with --policy random instead of mixed"
    return name, None


def make_policy(name: str) -> CollectionPolicy:
    """A fresh policy by name (one of ``POLICIES``)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name]()

"""The receding-horizon (MPC) loop: plan H steps, execute the first k, observe, replan."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from worldvid.agents.base import History, Plan
from worldvid.agents.lockstep import plan_together, search_of
from worldvid.data.episode import Episode
from worldvid.data.policies import reset_with_goal
from worldvid.windows import past_window


class PlanningAgent(Protocol):
    """What the MPC loop drives: a planner with ``plan`` (the sampling planners, ``RandomPlanner``)."""

    def reset(self, seed: int | None = None) -> None: ...

    def plan(self, history: History, goal_frame: np.ndarray, shift: int = 1, remaining: int | None = None) -> Plan: ...


@dataclass
class EpisodeResult:
    """One MPC episode.

    success: the goal was reached (``info["success"]``): at any step if the episode stopped on success, else
    at the last step. final_distance: ``info["state_distance"]`` at the end (world units).
    actions: float32 [T, A] executed. frames: uint8 [T + 1, H, W, 3] observed (frames[0] after reset).
    goal_frame: uint8 [H, W, 3]. decision_steps: int [D], the step t at which each decision was made.
    latency_s: float [D], wall time of each decision. model_calls: float [D], imagination calls per decision.
    imagined: uint8 [D, horizon, H, W, 3], each decision's best imagined future (None without imagination).
    rewards: float32 [T], terminated / truncated / step_success: bool [T], what ``env.step`` returned for each
    executed action (``info["success"]`` for the last); with them the episode is training data (``to_episode``).
    """

    seed: int
    success: bool
    first_success_step: int | None
    final_distance: float
    actions: np.ndarray
    frames: np.ndarray
    goal_frame: np.ndarray
    decision_steps: np.ndarray
    latency_s: np.ndarray
    model_calls: np.ndarray
    imagined: np.ndarray | None
    rewards: np.ndarray | None = None
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None
    step_success: np.ndarray | None = None
    final_info: dict[str, float] | None = None
    """The scalar entries of the last ``info`` (e.g. PushT's ``coverage``, ``angle_error``, ``pose_success``)."""

    @property
    def steps(self) -> int:
        return int(len(self.actions))

    @property
    def seconds_per_decision(self) -> float:
        return float(self.latency_s.mean()) if len(self.latency_s) else 0.0

    @property
    def model_calls_per_action(self) -> float:
        return float(self.model_calls.sum() / max(self.steps, 1))

    def aligned_imagination(self) -> np.ndarray | None:
        """The imagined frame beside each real one, uint8 [T + 1, H, W, 3] (None without imagination): the
        decision made at step t contributes its imagined frames 1..k for real frames t+1..t+k, where k actions
        were executed before the next decision; frame 0 is the real first frame."""
        if self.imagined is None:
            return None
        out = self.frames.copy()
        bounds = [*self.decision_steps.tolist(), self.steps]
        for j, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:])):
            count = min(t1 - t0, self.imagined.shape[1])
            out[t0 + 1 : t0 + 1 + count] = self.imagined[j, :count]
        return out

    def summary(self) -> dict:
        """The scalar results (JSON-friendly)."""
        return {
            "seed": self.seed, "success": self.success, "first_success_step": self.first_success_step,
            "final_distance": self.final_distance, "steps": self.steps, "decisions": int(len(self.latency_s)),
            "seconds_per_decision": self.seconds_per_decision, "model_calls_per_action": self.model_calls_per_action,
            **{f"final_{k}": v for k, v in (self.final_info or {}).items()},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to save (``np.savez``); imagined only when present."""
        out = {"actions": self.actions, "frames": self.frames, "goal_frame": self.goal_frame,
               "decision_steps": self.decision_steps, "latency_s": self.latency_s, "model_calls": self.model_calls}
        if self.imagined is not None:
            out["imagined"] = self.imagined
        for name in ("rewards", "terminated", "truncated", "step_success"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def to_episode(self, env_id: str, policy: str) -> Episode:
        """The executed trajectory as a training ``Episode`` (frames, actions, rewards, flags, goal image).

        ValueError when the per-step records are missing (a result not made by ``run_episode``) or the episode
        has no step (it started at the goal)."""
        if self.rewards is None or self.terminated is None or self.truncated is None:
            raise ValueError(f"episode of seed {self.seed} has no per-step rewards and flags to record")
        if self.steps == 0:
            raise ValueError(f"episode of seed {self.seed} executed no action; there is nothing to record")
        return Episode(frames=self.frames, actions=self.actions, rewards=self.rewards.astype(np.float32),
                       terminated=self.terminated.astype(bool), truncated=self.truncated.astype(bool),
                       goal_frame=self.goal_frame, env_id=env_id, seed=self.seed, policy=policy,
                       success=None if self.step_success is None else self.step_success.astype(bool))


class MPCEpisode:
    """One goal-image episode, decision by decision: ``run_episode`` drives one, ``run_lockstep`` several at once.

    Made by ``env.reset(seed=seed)`` (with ``goal_steps`` the goal is instead the state the task's expert reaches that
    many steps after the start, ``worldvid.data.policies.expert_goal``); the planner is reset with ``seed``, so the
    episode is a function of (env, planner, seed). An env whose reset info carries ``past_frames`` (uint8
    [P + 1, H, W, 3], the last = the first observation) and ``past_actions`` (float [P, A]) starts the history with
    them (``worldvid.envs.replayed_goals``). Each decision plans from ``history`` (the last ``context``
    frames and actions) toward ``goal`` with ``shift`` (steps executed since the previous plan); ``execute(plan,
    latency)`` runs its first ``execute`` actions (fewer if the plan is shorter). ``done`` at the time limit (or
    ``max_steps``), at termination, or at the first success when ``stop_on_success``.
    """

    def __init__(self, env: gym.Env, planner: PlanningAgent, seed: int, *, execute: int = 1, context: int = 4,
                 stop_on_success: bool = True, max_steps: int | None = None, keep_imagined: bool = True,
                 goal_steps: int = 0) -> None:
        if execute < 1:
            raise ValueError(f"execute must be a positive number of actions, got {execute}")
        observation, info = reset_with_goal(env, seed, goal_steps)
        goal = info.get("goal_frame")
        if goal is None:
            raise ValueError(f"{env.spec.id if env.spec else env} gives no info['goal_frame']; planning needs a goal image")
        self.goal = np.asarray(goal)
        if self.goal.shape != observation.shape or self.goal.dtype != np.uint8:
            raise ValueError(f"goal frame {self.goal.dtype} {self.goal.shape} does not match the observations "
                             f"{observation.dtype} {observation.shape}")
        self.limit = max_steps or (env.spec.max_episode_steps if env.spec else None)
        if self.limit is None:
            raise ValueError("the env has no time limit; pass max_steps")
        planner.reset(seed)
        self.env, self.planner, self.seed, self.execute_count = env, planner, int(seed), execute
        self.stop_on_success, self.keep_imagined = stop_on_success, keep_imagined
        self.action_dim = int(np.prod(env.action_space.shape))
        if info.get("past_actions") is not None:  # an env that starts inside a recorded episode (ReplayedGoals)
            past_frames = np.asarray(info["past_frames"])
            self.history = History(*past_window(past_frames, info["past_actions"], len(past_frames) - 1, context))
        else:
            self.history = History.start(observation, context, self.action_dim)
        self.frames, self.actions = [observation], []
        self.steps, self.latency, self.calls, self.imagined = [], [], [], []
        self.rewards, self.terms, self.truncs, self.step_success = [], [], [], []
        self.success, self.first_success = bool(info.get("success", False)), None
        self.distance, self.info = float(info.get("state_distance", np.nan)), info
        self.shift, self.t, self.ended = 0, 0, False

    @property
    def remaining(self) -> int:
        """Env steps left before the time limit."""
        return self.limit - self.t

    @property
    def done(self) -> bool:
        return self.ended or self.t >= self.limit or (self.stop_on_success and self.success)

    def execute(self, plan: Plan, latency_s: float) -> None:
        """Record one decision (its ``plan`` and wall time) and run its first actions in the env."""
        self.latency.append(latency_s)
        self.steps.append(self.t)
        self.calls.append(plan.model_calls)
        if self.keep_imagined and plan.imagined is not None:
            self.imagined.append(plan.imagined)
        self.shift = 0
        for action in plan.actions[:self.execute_count]:
            observation, reward, terminated, truncated, info = self.env.step(action)
            self.history = self.history.push(action, observation)
            self.frames.append(observation)
            self.actions.append(np.asarray(action, np.float32))
            self.t, self.shift, self.info = self.t + 1, self.shift + 1, info
            self.success, self.distance = bool(info.get("success", False)), float(info.get("state_distance", np.nan))
            self.rewards.append(float(reward))
            self.terms.append(bool(terminated))
            self.truncs.append(bool(truncated))
            self.step_success.append(self.success)
            if self.success and self.first_success is None:
                self.first_success = self.t
            self.ended = bool(terminated or truncated)
            if self.done:
                break

    def result(self) -> EpisodeResult:
        """The episode so far as an ``EpisodeResult``."""
        return EpisodeResult(
            seed=self.seed, success=self.success, first_success_step=self.first_success,
            final_distance=self.distance,
            actions=np.asarray(self.actions, np.float32).reshape(len(self.actions), self.action_dim),
            frames=np.stack(self.frames), goal_frame=self.goal, decision_steps=np.asarray(self.steps, np.int64),
            latency_s=np.asarray(self.latency), model_calls=np.asarray(self.calls, np.float64),
            imagined=np.stack(self.imagined) if self.imagined else None,
            rewards=np.asarray(self.rewards, np.float32), terminated=np.asarray(self.terms, bool),
            truncated=np.asarray(self.truncs, bool), step_success=np.asarray(self.step_success, bool),
            final_info={k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v)) for k, v in self.info.items()
                        if k not in ("success", "state_distance")
                        and isinstance(v, (bool, int, float, np.bool_, np.number))},
        )


def run_episode(env: gym.Env, planner: PlanningAgent, seed: int, *, execute: int = 1, context: int = 4,
                stop_on_success: bool = True, max_steps: int | None = None,
                keep_imagined: bool = True, goal_steps: int = 0) -> EpisodeResult:
    """Run one goal-image episode from ``env.reset(seed=seed)`` with receding-horizon planning (``MPCEpisode``):
    every decision plans from the last ``context`` frames and actions toward ``info["goal_frame"]`` and executes the
    first ``execute`` actions of the plan."""
    episode = MPCEpisode(env, planner, seed, execute=execute, context=context, stop_on_success=stop_on_success,
                         max_steps=max_steps, keep_imagined=keep_imagined, goal_steps=goal_steps)
    while not episode.done:
        start = time.perf_counter()
        plan = planner.plan(episode.history, episode.goal, shift=episode.shift, remaining=episode.remaining)
        episode.execute(plan, time.perf_counter() - start)
    return episode.result()


def run_lockstep(envs: Sequence[gym.Env], planners: Sequence[PlanningAgent], seeds: Sequence[int],
                 **options: Any) -> list[EpisodeResult]:
    """Run len(seeds) episodes at once, episode b in ``envs[b]`` with ``planners[b]`` from seed ``seeds[b]``
    (``options``: those of ``run_episode``): at each round every unfinished episode decides, their searches
    driven together (``worldvid.agents.lockstep.plan_together``: one batched rollout per imagination step).
    Each decision's latency is the round's wall time. Returns the results in the order of ``seeds``."""
    if not len(envs) == len(planners) == len(seeds):
        raise ValueError(f"need one env and one planner per seed, got {len(envs)}, {len(planners)}, {len(seeds)}")
    episodes = [MPCEpisode(env, planner, seed, **options) for env, planner, seed in zip(envs, planners, seeds)]
    while active := [e for e in episodes if not e.done]:
        start = time.perf_counter()
        plans = plan_together([search_of(e.planner, e.history, e.goal, e.shift, e.remaining) for e in active])
        seconds = time.perf_counter() - start
        for episode, plan in zip(active, plans):
            episode.execute(plan, seconds)
    return [episode.result() for episode in episodes]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default): (low, high)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def summarize_episodes(results: Sequence[EpisodeResult]) -> dict:
    """Success rate with its 95% Wilson interval, final state distance, s per decision (over all decisions)
    and imagination calls per executed action, over episodes (JSON-friendly)."""
    n = len(results)
    successes = sum(r.success for r in results)
    latencies = np.concatenate([r.latency_s for r in results]) if results else np.zeros(0)
    actions = sum(r.steps for r in results)
    distances = [r.final_distance for r in results]
    return {
        "episodes": n, "successes": int(successes), "success_rate": successes / max(n, 1),
        "success_ci95": list(wilson_interval(successes, n)),
        "final_distance_mean": float(np.mean(distances)) if n else float("nan"),
        "final_distance_median": float(np.median(distances)) if n else float("nan"),
        "seconds_per_decision": float(latencies.mean()) if latencies.size else 0.0,
        "model_calls_per_action": float(sum(r.model_calls.sum() for r in results) / max(actions, 1)),
        "steps_mean": actions / max(n, 1),
        **_final_info_means(results),
    }


def _final_info_means(results: Sequence[EpisodeResult]) -> dict:
    """Mean of each scalar the task reports at the end of every episode, e.g. {"final_coverage_mean": 0.97}."""
    infos = [r.final_info or {} for r in results]
    keys = set.intersection(*(set(i) for i in infos)) if infos else set()
    return {f"final_{k}_mean": float(np.mean([float(i[k]) for i in infos])) for k in sorted(keys)}

"""The receding-horizon (MPC) loop: plan H steps, execute the first k, observe, replan."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np

from worldvid.agents.base import History, Plan
from worldvid.data.episode import Episode
from worldvid.data.policies import expert_goal


class PlanningAgent(Protocol):
    """What the MPC loop drives: a planner with ``plan`` (the sampling planners, ``RandomPlanner``)."""

    def reset(self, seed: int | None = None) -> None: ...

    def plan(self, history: History, goal_frame: np.ndarray, shift: int = 1) -> Plan: ...


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


def run_episode(env: gym.Env, planner: PlanningAgent, seed: int, *, execute: int = 1, context: int = 4,
                stop_on_success: bool = True, max_steps: int | None = None,
                keep_imagined: bool = True, goal_steps: int = 0) -> EpisodeResult:
    """Run one goal-image episode from ``env.reset(seed=seed)`` with receding-horizon planning.

    Every decision plans from the last ``context`` frames and actions (``History``) toward ``info["goal_frame"]``
    and executes the first ``execute`` actions of the plan (fewer if the plan is shorter). The planner is reset
    with ``seed`` first, so the episode is a function of (env, planner, seed). Stops at the time limit (or
    ``max_steps``), or at the first success when ``stop_on_success``. With ``goal_steps`` the goal is instead the
    state the task's expert reaches that many steps after the start (``worldvid.data.policies.expert_goal``).
    """
    if execute < 1:
        raise ValueError(f"execute must be a positive number of actions, got {execute}")
    observation, info = env.reset(seed=seed)
    if goal_steps:
        info = expert_goal(env, goal_steps, seed)
    goal = info.get("goal_frame")
    if goal is None:
        raise ValueError(f"{env.spec.id if env.spec else env} gives no info['goal_frame']; planning needs a goal image")
    goal = np.asarray(goal)
    if goal.shape != observation.shape or goal.dtype != np.uint8:
        raise ValueError(f"goal frame {goal.dtype} {goal.shape} does not match the observations "
                         f"{observation.dtype} {observation.shape}")
    limit = max_steps or (env.spec.max_episode_steps if env.spec else None)
    if limit is None:
        raise ValueError("the env has no time limit; pass max_steps")
    planner.reset(seed)
    action_dim = int(np.prod(env.action_space.shape))
    history = History.start(observation, context, action_dim)
    frames, actions = [observation], []
    steps, latency, calls, imagined = [], [], [], []
    rewards, terms, truncs, step_success = [], [], [], []
    success, first_success, distance = bool(info.get("success", False)), None, float(info.get("state_distance", np.nan))
    shift, t, terminated, truncated = 0, 0, False, False
    while t < limit and not (stop_on_success and success):
        start = time.perf_counter()
        plan = planner.plan(history, goal, shift=shift)
        latency.append(time.perf_counter() - start)
        steps.append(t)
        calls.append(plan.model_calls)
        if keep_imagined and plan.imagined is not None:
            imagined.append(plan.imagined)
        shift = 0
        for action in plan.actions[:execute]:
            observation, reward, terminated, truncated, info = env.step(action)
            history = history.push(action, observation)
            frames.append(observation)
            actions.append(np.asarray(action, np.float32))
            t, shift = t + 1, shift + 1
            success, distance = bool(info.get("success", False)), float(info.get("state_distance", np.nan))
            rewards.append(float(reward))
            terms.append(bool(terminated))
            truncs.append(bool(truncated))
            step_success.append(success)
            if success and first_success is None:
                first_success = t
            if terminated or truncated or t >= limit or (stop_on_success and success):
                break
        if terminated or truncated:
            break
    return EpisodeResult(
        seed=int(seed), success=success, first_success_step=first_success, final_distance=distance,
        actions=np.asarray(actions, np.float32).reshape(len(actions), action_dim), frames=np.stack(frames),
        goal_frame=goal, decision_steps=np.asarray(steps, np.int64), latency_s=np.asarray(latency),
        model_calls=np.asarray(calls, np.float64),
        imagined=np.stack(imagined) if imagined else None,
        rewards=np.asarray(rewards, np.float32), terminated=np.asarray(terms, bool),
        truncated=np.asarray(truncs, bool), step_success=np.asarray(step_success, bool),
        final_info={k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v)) for k, v in info.items()
                    if k not in ("success", "state_distance") and isinstance(v, (bool, int, float, np.bool_, np.number))},
    )


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

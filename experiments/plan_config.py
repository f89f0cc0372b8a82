"""What one planner evaluation runs (``PlanEvalConfig``) and the checks made before any work (``validate``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldvid.agents import PLANNER_NAMES, PlannerConfig, SimulatorDynamics
from worldvid.agents.planner_config import require_positive_ints
from worldvid.costs import COSTS, make_cost
from worldvid.data.policies import reset_with_goal

DEFAULT_SIZE = 32
"""Frame size when no model fixes it (oracle, random)."""


@dataclass(frozen=True)
class PlanEvalConfig:
    """One planner evaluation: task, planner, cost, imagination (model or oracle), budget and parallelism."""

    env_id: str
    """Gymnasium id of the task, e.g. worldvid/PointReach-v0."""
    planner: str = "cem"
    """cem | mppi | shooting | random."""
    cost: str = "keypoint"
    """Goal-image cost: keypoint | pose | blur | pixel | learned (``worldvid.costs``)."""
    cost_model: str | None = None
    """Run folder of a learned goal distance (``worldvid train-cost --out``); needed by cost 'learned'."""
    oracle: bool = False
    """Imagine candidates in the true simulator instead of the world model (the upper bound)."""
    model: str | None = None
    """Training run folder (or its model folder); needed unless ``oracle`` or planner 'random'."""
    episodes: int = 30
    """Episodes to run; episode i uses seed ``seed + i``."""
    workers: int = 1
    """Parallel workers (Ray actors); 1 runs in this process."""
    seed: int = 0
    """Base seed S."""
    size: int | None = None
    """Frame size; default: the model's, else 32."""
    execute: int = 1
    """Actions executed per decision (k) before replanning."""
    compile: bool = False
    """Run the world model's denoiser compiled by torch.compile (``worldvid.model.compiled``): 1.24-1.39x faster
    decisions on 2-core CPUs (fp32 on AVX2, bf16 on AMX); each worker's first decision pays the compile (7-15 s from
    inductor's disk cache, 30-100 s without it)."""
    num_steps: int | None = 1
    """Denoising steps per imagined frame (None, or 0 on the command line: the model's default). One Euler step suffices for these
    near-deterministic scenes (as in DIAMOND) and keeps a decision under a second on 2 CPU cores."""
    max_steps: int | None = None
    """Cap on steps per episode (default: the task's time limit); for quick checks."""
    goal_steps: int = 0
    """0: the task's own goals (random reachable ones). N > 0: the goal is the state the task's expert reaches N
    steps after the start (DINO-WM's "N-step goal" set; ``worldvid.data.policies.expert_goal``)."""
    goal_store: str | None = None
    """Episode store of the env: goals come from its held-out episodes, the recorded frame ``goal_steps`` after a
    start state replayed from the same episode (``worldvid.envs.replayed_goals``; for envs without goal images of
    their own, such as Gymnasium's MuJoCo envs). Needs ``goal_steps``."""
    goal_tolerance: float = 0.02
    """With ``goal_store``: success when every body is within this distance (world units) of the goal state."""
    stop_on_success: bool = True
    """End an episode at its first success (success = reached the goal); else success is judged at the end."""
    lockstep: int = 1
    """Episodes one worker plans at once, their imagination batched (``worldvid.agents.run_lockstep``): more
    episodes/s per core; each episode's plans equal those it gets alone up to batched rounding."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves; also its torch thread count."""
    max_episode_retries: int = 3
    """Times an episode is resubmitted after its worker died or it passed its deadline (with workers > 1)."""
    episode_timeout_s: float = 3600.0
    """Deadline of one episode on a Ray worker, once the worker has started: past it the worker is killed and the
    episode retried (with workers > 1; one worker runs in this process, without deadline)."""
    planner_config: PlannerConfig = field(default_factory=PlannerConfig)
    """Budget (candidates, horizon, iterations) and search hyper-parameters."""
    device: str | None = None
    """Where the workers run the world model, e.g. 'cpu', 'cuda' (None: CUDA when present, else CPU). With more
    than one worker on CUDA each worker gets an equal share of the Ray cluster's GPUs and runs on the one Ray
    assigns it."""

    @property
    def needs_model(self) -> bool:
        return not self.oracle and self.planner != "random"

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))

    def label(self) -> str:
        """Short row label, e.g. 'cem/keypoint/oracle'."""
        source = "-" if self.planner == "random" else ("oracle" if self.oracle else "model")
        return f"{self.planner}/{'-' if self.planner == 'random' else self.cost}/{source}"


def validate(config: PlanEvalConfig) -> tuple[int, Any]:
    """Check everything before any work; returns (frame size, loaded model or None). ValueError on bad input.

    The model is loaded on the CPU (the workers move their replica to ``config.device``)."""
    from worldvid.device import resolve_device
    from worldvid.envs.factory import canonical_env_id, make_pixel_env

    require_positive_ints(config, ("episodes", "workers", "execute", "lockstep"))
    require_positive_ints(config, ("max_steps",), optional=True)  # None: the task's time limit
    if config.planner not in PLANNER_NAMES:
        raise ValueError(f"unknown planner {config.planner!r}; choose one of {list(PLANNER_NAMES)}")
    if config.cost not in COSTS:
        raise ValueError(f"unknown cost {config.cost!r}; choose one of {list(COSTS)}")
    steps = config.planner_config.horizon * config.planner_config.action_repeat
    if config.execute > steps:
        raise ValueError(f"execute ({config.execute}) cannot exceed the steps a plan covers (horizon x action_repeat = {steps})")
    if config.num_steps is not None and config.num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {config.num_steps}")
    if not config.cpus_per_worker > 0 or config.max_episode_retries < 0 or not config.episode_timeout_s > 0:
        raise ValueError("cpus_per_worker and episode_timeout_s must be positive, max_episode_retries >= 0")
    if config.goal_steps < 0:
        raise ValueError(f"goal_steps must be >= 0 (0: the task's own goals), got {config.goal_steps}")
    if config.goal_store is not None and (config.goal_steps < 1 or not config.goal_tolerance > 0):
        raise ValueError(f"goal_store needs goal_steps >= 1 (how far ahead the goal frame is) and a positive "
                         f"goal_tolerance, got {config.goal_steps} and {config.goal_tolerance}")
    if config.needs_model and config.model is None:
        raise ValueError(f"planner {config.planner!r} without --oracle imagines with a world model: pass a model")
    resolve_device(config.device)  # e.g. 'cuda' on a machine without it
    env = make_pixel_env(config.env_id, config.size or DEFAULT_SIZE)
    try:
        action_dim = int(np.prod(env.action_space.shape))
        model = None
        size = config.size
        if config.model is not None and (config.needs_model or config.size is None):
            from worldvid.run_folder import RunFolder

            model = RunFolder.of(config.model).load_model(
                {"frame_size": config.size, "action_dim": action_dim, "env_id": canonical_env_id(config.env_id)})
            size = model.config.frame_size
        size = size or DEFAULT_SIZE
        if size != env.observation_space.shape[0] or config.goal_store is not None:
            env.close()
            env = None
            env = make_plan_env(config, size)  # at the frame size the model fixes, with replayed goals if asked
        # e.g. a task without an expert fails here
        observation, info = reset_with_goal(env, config.seed, expert_goal_steps(config))
        goal = info.get("goal_frame")
        if goal is None or np.asarray(goal).shape != observation.shape:
            shape = None if goal is None else np.asarray(goal).shape
            raise ValueError(f"{config.env_id}: goal frame of shape {shape} does not match the observations "
                             f"{observation.shape}; planning needs a goal image like the frames")
        if config.planner != "random":  # e.g. keypoint on a task without object colours, a learned cost of
            cost = make_cost(config.cost, config.env_id, cost_model=config.cost_model)  # another task or size
            cost(observation, goal)
        if config.oracle:
            SimulatorDynamics(env)  # raises for envs without state copy
    finally:
        if env is not None:
            env.close()
    return size, (model if config.needs_model else None)


def seeds_starting_at_goal(config: PlanEvalConfig, size: int) -> list[int]:
    """The seeds among ``config.seed`` .. ``config.seed + config.episodes - 1`` whose episode starts at its goal
    (``info["success"]`` at reset, or at the ``goal_steps`` expert goal), so that with ``stop_on_success`` it ends
    before any action; one env reset (and expert rollout) per seed, no planning."""
    env = make_plan_env(config, size)
    try:
        steps = expert_goal_steps(config)
        return [seed for seed in range(config.seed, config.seed + config.episodes)
                if reset_with_goal(env, seed, steps)[1].get("success", False)]
    finally:
        env.close()


def expert_goal_steps(config: PlanEvalConfig) -> int:
    """The ``goal_steps`` the env's own reset takes (``reset_with_goal``): 0 where a ``goal_store``'s replayed
    episodes give the goals."""
    return config.goal_steps if config.goal_store is None else 0


def make_plan_env(config: PlanEvalConfig, size: int) -> Any:
    """The env episodes run in: ``config.env_id`` at ``size`` px; with ``config.goal_store``, made as that store's
    episodes were (its ``env_kwargs``) and wrapped in ``ReplayedGoals`` over the store's held-out episodes (the
    last 10%, as ``worldvid train`` holds them out). ValueError for a store of another env."""
    from worldvid.envs.factory import canonical_env_id, make_pixel_env

    if config.goal_store is None:
        return make_pixel_env(config.env_id, size)
    from worldvid.data.dataset import split_episodes
    from worldvid.data.store import EpisodeStore
    from worldvid.envs.replayed_goals import GoalSource, ReplayedGoals

    store = EpisodeStore(config.goal_store)
    try:
        if store.spec.env_id != canonical_env_id(config.env_id):
            raise ValueError(f"goal store {config.goal_store} holds {store.spec.env_id} episodes, not {config.env_id}")
        sources = []
        for index in split_episodes(store)[1]:
            episode = store.read_episode(index)
            sources.append(GoalSource(episode.seed, episode.actions, episode.frames))
        env_kwargs = dict(store.spec.env_kwargs)
    finally:
        store.close()
    if sources[0].frames.shape[1] != size:
        raise ValueError(f"goal store {config.goal_store} has {sources[0].frames.shape[1]} px frames, planning "
                         f"runs at {size} px")
    return ReplayedGoals(make_pixel_env(config.env_id, size, **env_kwargs), sources, config.goal_steps,
                         config.goal_tolerance, config.max_steps)

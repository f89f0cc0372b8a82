"""Ray-parallel evaluation of goal-image planners over many episodes (``worldvid plan``).

Episodes are spread over W workers (Ray actors), each holding one model replica and one env, with torch
threads set to its CPU share. Episode i always runs from seed S + i with the planner reseeded from it, so the
results do not depend on W or on which worker ran what. A worker that dies mid-episode is replaced and its
episode resubmitted; no result is lost. With W = 1 everything runs in this process, without Ray. On an
existing cluster call ``ray.init(address=...)`` first. Writes ``summary.json`` and one
``episodes/episode_XXXX.npz`` (actions, frames, goal, best imagined futures) per episode into the out dir;
``record`` also writes the executed episodes as an episode store, the training data of DAgger-style rounds
(``worldvid train --data COLLECTED RECORDED --init RUN``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from worldvid.agents import PLANNER_NAMES, PlannerConfig, SimulatorDynamics, WorldModelDynamics, make_planner
from worldvid.agents.base import require_positive_ints
from worldvid.agents.costs import COSTS, make_cost
from worldvid.agents.mpc import EpisodeResult, run_episode, summarize_episodes
from worldvid.atomic import save_npz_atomic, write_json_atomic

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
    """Goal-image cost: keypoint | blur | pixel (``agents.costs``)."""
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
    num_steps: int | None = 1
    """Denoising steps per imagined frame (None: the model's default). One Euler step suffices for these
    near-deterministic scenes (as in DIAMOND) and keeps a decision under a second on 2 CPU cores."""
    max_steps: int | None = None
    """Cap on steps per episode (default: the task's time limit); for quick checks."""
    stop_on_success: bool = True
    """End an episode at its first success (success = reached the goal); else success is judged at the end."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves; also its torch thread count."""
    max_episode_retries: int = 3
    """Times an episode is resubmitted after its worker died."""
    episode_timeout_s: float = 3600.0
    """Longest wait for one episode before giving up."""
    planner_config: PlannerConfig = field(default_factory=PlannerConfig)
    """Budget (candidates, horizon, iterations) and search hyper-parameters."""

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


# ---------------------------------------------------------------------------- validation
def validate(config: PlanEvalConfig) -> tuple[int, Any]:
    """Check everything before any work; returns (frame size, loaded model or None). ValueError on bad input."""
    from worldvid.data.collect import canonical_env_id, make_pixel_env

    require_positive_ints(config, ("episodes", "workers", "execute"))
    require_positive_ints(config, ("max_steps",), optional=True)  # None: the task's time limit
    if config.planner not in PLANNER_NAMES:
        raise ValueError(f"unknown planner {config.planner!r}; choose one of {list(PLANNER_NAMES)}")
    if config.cost not in COSTS:
        raise ValueError(f"unknown cost {config.cost!r}; choose one of {list(COSTS)}")
    if config.execute > config.planner_config.horizon:
        raise ValueError(f"execute ({config.execute}) cannot exceed the plan horizon ({config.planner_config.horizon})")
    if config.num_steps is not None and config.num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {config.num_steps}")
    if not config.cpus_per_worker > 0 or config.max_episode_retries < 0 or not config.episode_timeout_s > 0:
        raise ValueError("cpus_per_worker and episode_timeout_s must be positive, max_episode_retries >= 0")
    if config.needs_model and config.model is None:
        raise ValueError(f"planner {config.planner!r} without --oracle imagines with a world model: pass a model")
    env = make_pixel_env(config.env_id, config.size or DEFAULT_SIZE)
    try:
        action_dim = int(np.prod(env.action_space.shape))
        model = None
        size = config.size
        if config.model is not None and (config.needs_model or config.size is None):
            from worldvid.model import WorldModel
            from worldvid.train import model_dir

            model = WorldModel.from_pretrained(model_dir(config.model), frame_size=config.size,
                                               action_dim=action_dim, env_id=canonical_env_id(config.env_id))
            size = model.config.frame_size
        size = size or DEFAULT_SIZE
        if size != env.observation_space.shape[0]:
            env.close()
            env = make_pixel_env(config.env_id, size)
        observation, info = env.reset(seed=config.seed)
        goal = info.get("goal_frame")
        if goal is None or np.asarray(goal).shape != observation.shape:
            shape = None if goal is None else np.asarray(goal).shape
            raise ValueError(f"{config.env_id}: goal frame of shape {shape} does not match the observations "
                             f"{observation.shape}; planning needs a goal image like the frames")
        if config.planner != "random":
            make_cost(config.cost, config.env_id)  # e.g. keypoint on a task without object colours
        if config.oracle:
            SimulatorDynamics(env)  # raises for envs without state copy
    finally:
        env.close()
    return size, (model if config.needs_model else None)


# ---------------------------------------------------------------------------- one worker
class EpisodeRunner:
    """One worker: an env, a planner (with its model replica or the oracle); runs episodes by index.

    ``crash_once_marker`` is a test hook: the first ``run`` in any worker that finds no file at that path
    creates it and kills its process, as a crashing node would.
    """

    def __init__(self, config: PlanEvalConfig, size: int, model: Any = None, threads: int | None = None,
                 crash_once_marker: str | None = None) -> None:
        from worldvid.data.collect import make_pixel_env

        if threads is not None:
            torch.set_num_threads(threads)
        self.config = config
        self.crash_once_marker = crash_once_marker
        self.env = make_pixel_env(config.env_id, size)
        space = self.env.action_space
        dynamics: Any = None
        if config.oracle:
            dynamics = SimulatorDynamics(self.env)
        elif model is not None:
            dynamics = WorldModelDynamics(model, num_steps=config.num_steps)
        self.context = model.config.context if model is not None else 4
        cost = None if config.planner == "random" else make_cost(config.cost, config.env_id)
        self.planner = make_planner(config.planner, dynamics, cost, space.low, space.high, config.planner_config)

    def run(self, index: int) -> EpisodeResult:
        """Episode ``index`` from seed ``config.seed + index``."""
        marker = self.crash_once_marker
        if marker is not None and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        c = self.config
        return run_episode(self.env, self.planner, c.seed + index, execute=c.execute, context=self.context,
                           stop_on_success=c.stop_on_success, max_steps=c.max_steps)


def _run_in_process(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                    on_result: Callable[[int, EpisodeResult], None], crash_once_marker: str | None) -> None:
    previous = torch.get_num_threads()
    try:
        # the same thread count as a worker's, so the arithmetic (and results) match the parallel run
        runner = EpisodeRunner(config, size, model, config.threads, crash_once_marker)
        for index in indices:
            on_result(index, runner.run(index))
    finally:
        torch.set_num_threads(previous)


def _run_with_ray(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                  on_result: Callable[[int, EpisodeResult], None], crash_once_marker: str | None) -> None:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    if not ray.is_initialized():
        cpus = max(1, math.ceil(config.workers * config.cpus_per_worker))
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    workers = min(config.workers, len(indices))
    fits = int(ray.cluster_resources().get("CPU", 0.0) // config.cpus_per_worker)
    if fits < workers:
        # an actor holds its CPUs while alive, so actors beyond the cluster's size would never start
        warnings.warn(f"the Ray cluster fits {fits} workers of {config.cpus_per_worker:g} CPUs, not {workers}; "
                      f"using {max(fits, 1)}", stacklevel=2)
        workers = max(fits, 1)
    remote = ray.remote(EpisodeRunner).options(num_cpus=config.cpus_per_worker)
    model_ref = ray.put(model) if model is not None else None  # one copy in the object store, any node

    def start() -> Any:
        return remote.remote(config, size, model_ref, config.threads, crash_once_marker)

    actors = [start() for _ in range(workers)]
    queue, idle = deque(indices), list(range(workers))
    running: dict[Any, tuple[int, int]] = {}
    attempts: dict[int, int] = {}
    try:
        while queue or running:
            while queue and idle:
                slot, index = idle.pop(), queue.popleft()
                running[actors[slot].run.remote(index)] = (slot, index)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=config.episode_timeout_s)
            if not ready:
                raise TimeoutError(f"no episode finished within {config.episode_timeout_s:.0f} s; "
                                   "is the Ray cluster short of CPUs for the workers?")
            slot, index = running.pop(ready[0])
            try:
                result = ray.get(ready[0], timeout=config.episode_timeout_s)
            except (RayActorError, GetTimeoutError) as error:
                attempts[index] = attempts.get(index, 0) + 1
                if attempts[index] > config.max_episode_retries:
                    raise RuntimeError(f"episode {index} failed {attempts[index]} times: {error}") from error
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = start()  # a fresh worker; the episode is redone from its seed
                queue.appendleft(index)
            else:
                on_result(index, result)
            idle.append(slot)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


# ---------------------------------------------------------------------------- statistics and report
def aggregate(results: Sequence[EpisodeResult], seconds: float, config: PlanEvalConfig) -> dict[str, Any]:
    """The summary row of an evaluation: ``summarize_episodes`` plus what was run, and how fast."""
    row = {"label": config.label(), "env_id": config.env_id, "planner": config.planner,
           "cost": None if config.planner == "random" else config.cost, "oracle": config.oracle}
    row.update(summarize_episodes(results))
    budget = 0 if config.planner == "random" else config.planner_config.candidates * config.planner_config.horizon
    row["imagined_frames_per_action"] = row["model_calls_per_action"] * budget
    row.update(config_columns(config))
    row.update(workers=config.workers, wall_seconds=seconds, episodes_per_second=len(results) / max(seconds, 1e-9))
    return row


def budget_label(config: PlanEvalConfig) -> str:
    """'candidates x horizon x iterations' of a sampling planner ('-' for random), e.g. '32x6x2'."""
    p = config.planner_config
    return "-" if config.planner == "random" else f"{p.candidates}x{p.horizon}x{p.iterations}"


def config_columns(config: PlanEvalConfig) -> dict[str, str]:
    """The table columns that say what was run: budget, world model (the last two parts of its path, '-' for the
    oracle and random) and the seeds, e.g. {'budget': '32x6x2', 'model_name': 'runs/push32s', 'seeds': '0-29'}."""
    model = "/".join(Path(config.model).parts[-2:]) if config.needs_model and config.model else "-"
    return {"budget": budget_label(config), "model_name": model,
            "seeds": f"{config.seed}-{config.seed + config.episodes - 1}"}


TABLE_COLUMNS = (("label", "planner/cost/imagination", "{}"), ("model_name", "model", "{}"), ("seeds", "seeds", "{}"),
                 ("budget", "cand x hor x iter", "{}"), ("success_rate", "success", "{:.0%}"),
                 ("success_ci95", "95% CI", "[{0[0]:.0%}, {0[1]:.0%}]"),
                 ("final_distance_mean", "final dist", "{:.3f}"), ("seconds_per_decision", "s/decision", "{:.3f}"),
                 ("model_calls_per_action", "calls/action", "{:.2f}"), ("episodes", "episodes", "{}"),
                 ("episodes_per_second", "episodes/s", "{:.3f}"))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of summary rows (``aggregate`` dicts)."""
    header = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


@dataclass
class PlanEvalReport:
    """What ``evaluate_planner`` returns: the summary row and every episode (ordered by index)."""

    summary: dict[str, Any]
    results: list[EpisodeResult]
    out: Path | None


def evaluate_planner(config: PlanEvalConfig, out: str | os.PathLike | None = None, video: bool = False,
                     progress: bool = True, record: str | os.PathLike | None = None,
                     _crash_once_marker: str | None = None) -> PlanEvalReport:
    """Run ``config.episodes`` MPC episodes and summarise them; see the module docstring.

    out: folder for summary.json and episodes/episode_XXXX.npz (nothing is written if None).
    video: also write videos/episode_XXXX.mp4 (real | imagined | error | goal side by side).
    record: also write the executed episodes as an episode store (training data, e.g. for DAgger-style
        fine-tuning on the states the planner visits); its spec is checked before any episode runs.
    """
    if video and importlib.util.find_spec("worldvid.video") is None:
        raise NotImplementedError("--video needs worldvid.video (side_by_side, write_video), which is missing")
    if video and out is None:
        raise ValueError("video needs an out folder")
    size, model = validate(config)
    store = _record_store(config, size, record) if record is not None else None
    folder = Path(out) if out is not None else None
    if folder is not None:
        (folder / "episodes").mkdir(parents=True, exist_ok=True)
    results: dict[int, EpisodeResult] = {}

    def on_result(index: int, result: EpisodeResult) -> None:
        results[index] = result
        if folder is not None:
            save_npz_atomic(folder / "episodes" / f"episode_{index:04d}.npz", **result.arrays())
            if video:
                _write_episode_video(folder / "videos" / f"episode_{index:04d}.mp4", result)
        if progress:
            print(f"[{config.label()}] episode {index} seed {result.seed}: success={result.success} "
                  f"distance={result.final_distance:.3f} steps={result.steps} "
                  f"s/decision={result.seconds_per_decision:.3f}", flush=True)

    start = time.perf_counter()
    indices = list(range(config.episodes))
    run = _run_in_process if config.workers == 1 else _run_with_ray
    run(config, size, model, indices, on_result, _crash_once_marker)
    ordered = [results[i] for i in indices]
    summary = aggregate(ordered, time.perf_counter() - start, config)
    summary["frame_size"] = size
    if store is not None:
        store.write_episodes([r.to_episode(store.spec.env_id, store.spec.policy) for r in ordered])
        summary["recorded_store"] = str(store.root)
    if folder is not None:
        record = {"summary": summary, "config": asdict(config),
                  "episodes": [dict(index=i, **r.summary()) for i, r in zip(indices, ordered)]}
        write_json_atomic(folder / "summary.json", record, indent=2)
    return PlanEvalReport(summary, ordered, folder)


def _record_store(config: PlanEvalConfig, size: int, root: str | os.PathLike):
    """The episode store the evaluation's episodes will be written to (made now, so a folder holding other
    data fails before any work: ``StoreMismatchError``)."""
    from worldvid.data.collect import store_spec
    from worldvid.data.store import EpisodeStore

    spec = store_spec(config.env_id, size, policy=f"plan:{config.label()}", seed=config.seed)
    return EpisodeStore.create(root, spec)


def _write_episode_video(path: Path, result: EpisodeResult) -> None:
    """real frame | goal | the planner's best imagined future, one video frame per decision (+ the last frame)."""
    from worldvid.experiments.render import planning_video

    real = np.concatenate([result.frames[result.decision_steps], result.frames[-1:]])
    futures = list(result.imagined) if result.imagined is not None else [None] * len(result.decision_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    planning_video(real, result.goal_frame, futures, path, meta=result.summary())

"""The workers of plan evaluation: ``EpisodeRunner`` (one env, one planner) and how episodes are spread over them.

Episodes are spread over W workers (Ray actors), each holding one model replica (on ``config.device``) and one env,
with torch threads set to its CPU share and, when the model runs on CUDA, an equal share of the cluster's GPUs.
Episode i always runs from seed S + i with the planner reseeded from it, so the results do
not depend on W or on which worker ran what. A worker that dies mid-episode is replaced and its episode
resubmitted; no result is lost. With W = 1 everything runs in this process, without Ray.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from worldvid.agents import SimulatorDynamics, WorldModelDynamics, make_planner
from worldvid.costs import make_cost
from worldvid.agents.mpc import EpisodeResult, run_episode
from worldvid.device import resolve_device
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.parallel import bounded_queue, init_ray, worker_device


class EpisodeRunner:
    """One worker: an env, a planner (with its model replica, moved to ``config.device``, or the oracle); runs
    episodes by index.

    ``crash_once_marker`` is a test hook: the first ``run`` in any worker that finds no file at that path
    creates it and kills its process, as a crashing node would.
    """

    def __init__(self, config: PlanEvalConfig, size: int, model: Any = None, threads: int | None = None,
                 crash_once_marker: str | None = None) -> None:
        from worldvid.envs.factory import make_pixel_env

        if threads is not None:
            torch.set_num_threads(threads)
        self.config = config
        self.crash_once_marker = crash_once_marker
        self.env = make_pixel_env(config.env_id, size)
        space = self.env.action_space
        if model is not None:
            model = model.to(resolve_device(config.device))  # validate loaded it on the CPU
        dynamics: Any = None
        if config.oracle:
            dynamics = SimulatorDynamics(self.env)
        elif model is not None:
            dynamics = WorldModelDynamics(model, num_steps=config.num_steps)
        self.context = model.config.context if model is not None else 4
        cost = None if config.planner == "random" else make_cost(
            config.cost, config.env_id, cost_model=config.cost_model, device=resolve_device(config.device))
        self.planner = make_planner(config.planner, dynamics, cost, space.low, space.high, config.planner_config)

    def run(self, index: int) -> EpisodeResult:
        """Episode ``index`` from seed ``config.seed + index``."""
        marker = self.crash_once_marker
        if marker is not None and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        c = self.config
        return run_episode(self.env, self.planner, c.seed + index, execute=c.execute, context=self.context,
                           stop_on_success=c.stop_on_success, max_steps=c.max_steps, goal_steps=c.goal_steps)


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

    init_ray(num_cpus=max(1, math.ceil(config.workers * config.cpus_per_worker)))
    workers = min(config.workers, len(indices))
    fits = int(ray.cluster_resources().get("CPU", 0.0) // config.cpus_per_worker)
    if fits < workers:
        # an actor holds its CPUs while alive, so actors beyond the cluster's size would never start
        warnings.warn(f"the Ray cluster fits {fits} workers of {config.cpus_per_worker:g} CPUs, not {workers}; "
                      f"using {max(fits, 1)}", stacklevel=3)
        workers = max(fits, 1)
    gpus, device = worker_device(config.device, workers) if model is not None else (0.0, config.device)
    worker_config = replace(config, device=device)
    remote = ray.remote(EpisodeRunner).options(num_cpus=config.cpus_per_worker, num_gpus=gpus)
    model_ref = ray.put(model) if model is not None else None  # one copy in the object store, any node

    def start() -> Any:
        return remote.remote(worker_config, size, model_ref, config.threads, crash_once_marker)

    actors = [start() for _ in range(workers)]

    def replace_worker(slot: int) -> None:
        ray.kill(actors[slot], no_restart=True)
        actors[slot] = start()  # a fresh worker; the episode is redone from its seed

    try:
        bounded_queue(indices, lambda slot, index: actors[slot].run.remote(index), on_result, slots=workers,
                      timeout_s=config.episode_timeout_s, what="episode",
                      hint="is the Ray cluster short of CPUs for the workers?",
                      retry_on=(RayActorError, GetTimeoutError), max_retries=config.max_episode_retries,
                      on_retry=replace_worker)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def run_episodes(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                 on_result: Callable[[int, EpisodeResult], None], crash_once_marker: str | None = None) -> None:
    """Run the episodes ``indices`` of ``config`` and hand each result to ``on_result(index, result)`` as it comes.

    ``config.workers`` == 1: one ``EpisodeRunner`` in this process, in index order. More: that many Ray actors
    (Ray started through ``worldvid.parallel.init_ray``), at most one episode each at a time, in completion order.
    size, model: what ``validate`` returned. crash_once_marker: see ``EpisodeRunner``.
    """
    run = _run_in_process if config.workers == 1 else _run_with_ray
    run(config, size, model, indices, on_result, crash_once_marker)

"""The workers of plan evaluation: ``EpisodeRunner`` (one env, one planner) and how episodes are spread over them.

Episodes are spread over W workers (Ray actors), each holding one model replica (on ``config.device``) and one env,
with torch threads set to its CPU share and, when the model runs on CUDA, an equal share of the cluster's GPUs.
Episode i always runs from seed S + i with the planner reseeded from it, so the results do
not depend on W or on which worker ran what. Each episode has a deadline (``config.episode_timeout_s``, counted
from its submission to a worker that has started): a worker that dies mid-episode, or whose episode passes its
deadline (a hung worker), is killed and replaced and its episode resubmitted, at most
``config.max_episode_retries`` times; no result is lost. A failure that persists ends the run with one line
naming the episode and seed (``WorkerError``). With W = 1 everything runs in this process, without Ray and
without deadlines.

``FaultInjection`` makes a worker crash, hang or raise at a chosen episode: the test hook of these paths.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from worldvid.agents import SimulatorDynamics, WorldModelDynamics, make_planner
from worldvid.costs import make_cost
from worldvid.agents.mpc import EpisodeResult, run_lockstep
from worldvid.device import resolve_device
from worldvid.experiments.plan_config import PlanEvalConfig, expert_goal_steps, make_plan_env
from worldvid.model.compiled import compile_denoiser
from worldvid.parallel import bounded_queue, explain, init_ray, reworded, worker_device


WORKER_START_S = 300.0
"""Least time a worker is given to start (import, load its model replica, make its env), however short the
episodes' deadline: a worker that takes longer is stuck, e.g. waiting for resources the cluster lacks."""

FAULTS_VARIABLE = "WORLDVID_INJECT_FAULTS"
"""Environment variable holding a ``FaultInjection`` as JSON, e.g. ``{"marker_dir": "/tmp/f", "hang_at": 1}``."""

_ERRORS = {"OSError": OSError, "KeyError": KeyError, "TypeError": TypeError, "ValueError": ValueError}


@dataclass(frozen=True)
class FaultInjection:
    """Faults an ``EpisodeRunner`` injects at chosen episodes, to test crash, hang and error handling. Off unless
    given: the ``_faults`` argument of ``evaluate_planner``, or the ``WORLDVID_INJECT_FAULTS`` environment variable
    (these fields as JSON) of the process that runs the evaluation. A fault hits the first ``times`` attempts at its
    episode; attempts are counted across processes and reruns by marker files in ``marker_dir``, so a retry (or a
    rerun) after the last one runs clean. Checking costs one ``os.path.exists`` per episode, and only when set."""

    marker_dir: str
    """Folder of the marker files (one per fault fired: '{kind}-{episode}-{attempt}')."""
    crash_at: int | None = None
    """Episode at which the process running it exits at once (``os._exit``): a dead Ray worker, or with one
    worker this process, as kill -9 would."""
    hang_at: int | None = None
    """Episode at which the worker sleeps forever (a hung, not dead, worker)."""
    raise_at: int | None = None
    """Episode at which the worker raises ``error``."""
    error: str = "OSError"
    """What ``raise_at`` raises: OSError | KeyError | TypeError | ValueError."""
    times: int = 1
    """Attempts of each fault's episode that it hits."""

    @classmethod
    def from_environment(cls) -> FaultInjection | None:
        """The faults ``WORLDVID_INJECT_FAULTS`` asks for (None when unset); ValueError when it is malformed."""
        text = os.environ.get(FAULTS_VARIABLE)
        if not text:
            return None
        try:
            faults = cls(**json.loads(text))
        except (ValueError, TypeError) as err:
            names = [f.name for f in fields(cls)]
            raise ValueError(f"{FAULTS_VARIABLE} must be a JSON object of {names}: {err}") from None
        if faults.error not in _ERRORS:
            raise ValueError(f"{FAULTS_VARIABLE}: error must be one of {list(_ERRORS)}, got {faults.error!r}")
        return faults

    def fire(self, index: int) -> None:
        """Inject the fault set for episode ``index``, if it has not yet hit ``times`` attempts."""
        for kind in ("crash", "hang", "raise"):
            if getattr(self, f"{kind}_at") == index and self._claim(kind, index):
                if kind == "crash":
                    os._exit(1)
                if kind == "hang":
                    while True:
                        time.sleep(3600)
                raise _ERRORS[self.error](f"fault injected at episode {index}")

    def _claim(self, kind: str, index: int) -> bool:
        for attempt in range(self.times):
            try:
                Path(self.marker_dir, f"{kind}-{index}-{attempt}").open("x").close()
                return True
            except FileExistsError:
                continue
        return False


class EpisodeRunner:
    """One worker: an env, a planner (with its model replica, moved to ``config.device``, or the oracle); runs
    episodes by index, ``config.lockstep`` at a time at most (one env and planner per episode, one model).
    ``faults``: see ``FaultInjection``."""

    def __init__(self, config: PlanEvalConfig, size: int, model: Any = None, threads: int | None = None,
                 faults: FaultInjection | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.config, self.size, self.faults = config, size, faults
        if model is not None:
            model = model.to(resolve_device(config.device))  # validate loaded it on the CPU
            if config.compile:
                compile_denoiser(model)
        self.model = model
        self.context = model.config.context if model is not None else 4
        self.cost = None if config.planner == "random" else make_cost(  # shared: costs hold no episode state
            config.cost, config.env_id, cost_model=config.cost_model, device=resolve_device(config.device))
        self.env = make_plan_env(config, size)
        self.planner = self._planner_for(self.env)
        self.slots: list[tuple[Any, Any]] = [(self.env, self.planner)]

    def _planner_for(self, env: Any) -> Any:
        c = self.config
        dynamics: Any = None
        if c.oracle:
            dynamics = SimulatorDynamics(env)
        elif self.model is not None:
            dynamics = WorldModelDynamics(self.model, num_steps=c.num_steps)
        return make_planner(c.planner, dynamics, self.cost, env.action_space.low, env.action_space.high,
                            c.planner_config)

    def ready(self) -> bool:
        """True once constructed (a Ray actor answers this when it has started)."""
        return True

    def run(self, index: int) -> EpisodeResult:
        """Episode ``index`` from seed ``config.seed + index``."""
        return self.run_batch([index])[0]

    def run_batch(self, indices: Sequence[int]) -> list[EpisodeResult]:
        """Episodes ``indices`` (each from seed ``config.seed + index``) planned in lockstep
        (``worldvid.agents.run_lockstep``): their imagination batched, each with its own env and planner."""
        if self.faults is not None:
            for index in indices:
                self.faults.fire(index)
        while len(self.slots) < len(indices):
            env = make_plan_env(self.config, self.size)
            self.slots.append((env, self._planner_for(env)))
        c = self.config
        envs, planners = zip(*self.slots[:len(indices)])
        return run_lockstep(envs, planners, [c.seed + index for index in indices], execute=c.execute,
                            context=self.context, stop_on_success=c.stop_on_success, max_steps=c.max_steps,
                            goal_steps=expert_goal_steps(c))

    def close(self) -> None:
        """Close every env this worker made."""
        for env, _ in self.slots:
            env.close()


def episode_name(config: PlanEvalConfig, index: int) -> str:
    """How messages name episode ``index``, e.g. 'episode 3 (seed 103)'."""
    return f"episode {index} (seed {config.seed + index})"


def batch_name(config: PlanEvalConfig, batch: Sequence[int]) -> str:
    """How messages name a lockstep batch: ``episode_name`` for one episode, else e.g. 'episodes 4, 5 (seeds 104,
    105; planned in lockstep)'."""
    if len(batch) == 1:
        return episode_name(config, batch[0])
    return (f"episodes {', '.join(map(str, batch))} (seeds {', '.join(str(config.seed + i) for i in batch)}; "
            "planned in lockstep)")


def batches(config: PlanEvalConfig, indices: Sequence[int]) -> list[tuple[int, ...]]:
    """``indices`` in order, cut into lockstep batches of ``config.lockstep`` episodes (the last may be shorter)."""
    size = config.lockstep
    return [tuple(indices[i:i + size]) for i in range(0, len(indices), size)]


def _run_in_process(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                    on_result: Callable[[int, EpisodeResult], None], faults: FaultInjection | None) -> None:
    previous = torch.get_num_threads()
    try:
        # the same thread count as a worker's, so the arithmetic (and results) match the parallel run
        runner = EpisodeRunner(config, size, model, config.threads, faults)
        try:
            for batch in batches(config, indices):
                try:
                    results = runner.run_batch(batch)
                except Exception as error:  # any failure of the episodes: one line naming them, as with Ray workers
                    key = batch[0] if len(batch) == 1 else batch
                    raise reworded(error, f"{batch_name(config, batch)} failed: {explain(error)[1]}", key) from error
                for index, result in zip(batch, results):
                    on_result(index, result)
        finally:
            runner.close()
    finally:
        torch.set_num_threads(previous)


def _run_with_ray(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                  on_result: Callable[[int, EpisodeResult], None], faults: FaultInjection | None) -> None:
    import ray

    init_ray(num_cpus=max(1, math.ceil(config.workers * config.cpus_per_worker)))
    # keys: an episode's index, or a lockstep batch's tuple of indices
    work: list[Any] = [batch[0] if len(batch) == 1 else batch for batch in batches(config, indices)]
    workers = min(config.workers, len(work))
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
    actors: list[Any] = []

    def start(slots: Sequence[int]) -> None:
        """Start a fresh worker on each slot and wait until all have started (so that an episode's deadline
        does not count a worker's start-up)."""
        for slot in slots:
            actor = remote.remote(worker_config, size, model_ref, config.threads, faults)
            actors[slot:slot + 1] = [actor]
        _wait_started([actors[slot] for slot in slots], max(config.episode_timeout_s, WORKER_START_S))

    def replace_worker(slot: int) -> None:
        ray.kill(actors[slot], no_restart=True)
        start([slot])  # a fresh worker; the episode is redone from its seed

    try:
        start(range(workers))
        def members(key: Any) -> tuple[int, ...]:
            return key if isinstance(key, tuple) else (key,)

        def on_batch(key: Any, results: list[EpisodeResult]) -> None:
            for index, result in zip(members(key), results):
                on_result(index, result)

        # a lockstep batch is retried whole, and given the deadline of its episodes together
        bounded_queue(work, lambda slot, key: actors[slot].run_batch.remote(list(members(key))), on_batch, slots=workers,
                      timeout_s=config.episode_timeout_s * config.lockstep, what="episode",
                      hint="a hung worker, or raise --episode-timeout-s if episodes take this long",
                      max_retries=config.max_episode_retries, on_retry=replace_worker,
                      cancel=lambda slot, ref: ray.kill(actors[slot], no_restart=True),  # actor calls: kill
                      describe=lambda key: batch_name(config, members(key)))
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _wait_started(actors: Sequence[Any], timeout_s: float) -> None:
    """Wait until every actor has been constructed; one-line ``WorkerError`` when one could not start (its
    constructor raised) or ``WorkerTimeoutError`` when they did not start within ``timeout_s``."""
    import ray

    from worldvid.parallel import WorkerTimeoutError

    refs = [actor.ready.remote() for actor in actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:
            cause, why, _ = explain(error)
            raise reworded(cause, f"a plan worker failed: {why}") from error
    if len(ready) < len(refs):
        raise WorkerTimeoutError(f"{len(refs) - len(ready)} plan worker(s) did not start within {timeout_s:g} s; "
                                 "is the Ray cluster short of CPUs for the workers?")


def run_episodes(config: PlanEvalConfig, size: int, model: Any, indices: Sequence[int],
                 on_result: Callable[[int, EpisodeResult], None], faults: FaultInjection | None = None) -> None:
    """Run the episodes ``indices`` of ``config`` and hand each result to ``on_result(index, result)`` as it comes.

    ``config.workers`` == 1: one ``EpisodeRunner`` in this process, in index order. More: that many Ray actors
    (Ray started through ``worldvid.parallel.init_ray``), at most one episode each at a time, in completion order,
    each episode with a deadline and bounded retries (module docstring). With ``config.lockstep`` = B > 1 the
    episodes go in batches of B consecutive indices, each planned in lockstep by one worker, retried whole. size, model: what ``validate`` returned.
    faults: see ``FaultInjection`` (None: those ``WORLDVID_INJECT_FAULTS`` asks for, usually none).
    An episode that fails for good raises ``worldvid.parallel.WorkerError`` naming it and its seed.
    """
    faults = faults if faults is not None else FaultInjection.from_environment()
    if not indices:
        return
    run = _run_in_process if config.workers == 1 else _run_with_ray
    run(config, size, model, indices, on_result, faults)

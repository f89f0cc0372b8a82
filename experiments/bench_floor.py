"""Bench section ``floor``: how far one planner decision is from the matmul floor, per torch thread count.

The floor of a decision is the time its imagination would take at the matmul peak of the precision the model runs
in (bf16 under autocast, on CPUs with native bf16; else fp32): decision FLOPs / that peak measured with the same
number of torch threads as the decision. Decision FLOPs are counted by torch's
``FlopCounterMode`` (as ``bench.denoiser_flops`` counts the denoiser) around one imagination call of the planner's
own dynamics per iteration, on the batch that iteration imagines (``candidates`` sequences of ``horizon x
action_repeat`` actions, fewer with iCEM's ``population_decay``: that many frames, each ``num_steps`` denoiser calls at
that batch).

The latency is that of CEM with the keypoint cost at the budget given (default ``PlannerConfig()``, one Euler step as
``PlanEvalConfig``), built and run by ``plan_workers.EpisodeRunner`` exactly as one evaluation worker runs it: one
short episode per thread count, the first ``warmup`` decisions discarded, the median of the next ``decisions``; then
the same with the denoiser compiled (``worldvid.model.compiled``), side by side in the same process, in turns.
Without a trained run the default 32x32 world model with fresh weights is used (imagination costs the same whatever
the weights).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from worldvid.agents import History, PlannerConfig
from worldvid.device import resolve_device
from worldvid.experiments.bench import autocast_enabled, matmul_peak, torch_threads
from worldvid.experiments.bench_plan import BENCH_ENV, model_folder
from worldvid.experiments.plan_config import PlanEvalConfig, validate
from worldvid.experiments.plan_workers import EpisodeRunner
from worldvid.model.compiled import compile_denoiser, eager_calls


def decision_flops(runner: EpisodeRunner) -> int:
    """FLOPs of the imagination in one decision of ``runner``'s (model-based) planner: one call of its dynamics per
    iteration on the batch that iteration imagines, actions float32 [population(i), horizon x action_repeat, A]
    (``PlannerConfig.population``), counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    planner = runner.planner
    c = planner.config
    observation, _ = runner.env.reset(seed=0)
    history = History.start(observation, runner.context, planner.action_dim)
    per_batch: dict[int, int] = {}  # FLOPs do not depend on the values: each batch size is counted once
    for iteration in range(c.iterations):
        batch = c.population(iteration)
        if batch not in per_batch:
            counter = FlopCounterMode(display=False)
            with counter:
                planner.dynamics.imagine(history, torch.zeros(batch, c.horizon * c.action_repeat, planner.action_dim))
            per_batch[batch] = counter.get_total_flops()
    return sum(per_batch[c.population(i)] for i in range(c.iterations))


def decision_latencies(runner: EpisodeRunner, threads: int, warmup: int) -> np.ndarray:
    """Seconds of each decision after the first ``warmup`` of one episode (seed ``config.seed``) of ``runner``,
    float [D], run with ``threads`` torch threads (the previous count is restored)."""
    with torch_threads(threads):
        latencies = runner.run(0).latency_s[warmup:]
    if not len(latencies):
        raise RuntimeError(f"the bench episode ended after {warmup} decision(s) or fewer: no decision left to time")
    return latencies


def bench_floor(model: str | os.PathLike | None = None, env_id: str = BENCH_ENV, threads: tuple[int, ...] = (1, 2),
                decisions: int = 5, warmup: int = 2, planner_config: PlannerConfig | None = None,
                peak: dict[str, float] | None = None, device: str | None = None,
                compiled: bool = True, rounds: int = 2) -> dict[str, float]:
    """One CEM decision (keypoint cost) against its matmul floor, with each thread count of ``threads``; the model (a
    run or model folder; None: the default 32x32 config, fresh weights) on ``device`` (None: CUDA when present, else
    CPU). The torch thread count is restored afterwards.

    peak: ``bench_peak``'s figures; a missing ``matmul_gflops_<precision>_<T>_threads`` is measured here.
    compiled: also time the decision with the denoiser compiled: after its compile, ``rounds`` short episodes of each,
    eager and compiled in turns, per thread count (the medians over all their timed decisions).
    Keys: ``decision_frames`` (the frames one decision imagines, ``PlannerConfig.imagined_per_decision``: candidates x
    horizon x action_repeat x iterations at a fixed population),
    ``decision_denoise_steps`` (Euler steps per frame), ``decision_gflop`` (GFLOP of one decision's imagination),
    ``decision_gflop_per_frame``; per thread count T: ``decision_s_cem_<T>_threads`` (median seconds per decision),
    and on the CPU ``decision_floor_s_<T>_threads`` (decision_gflop / matmul_gflops_<precision>_<T>_threads) and
    ``decision_vs_floor_<T>_threads`` (latency / floor); ``decision_precision_is_bf16`` (1: the floor is the bf16
    peak's, 0: fp32's). With ``compiled``: ``decision_compile_episode_s`` (a short episode whose first decision
    compiles: the one-time cost, smaller from inductor's disk cache), ``decision_s_cem_compiled_<T>_threads`` and
    on the CPU ``decision_vs_floor_compiled_<T>_threads``. On CUDA there is no floor: the peaks are the CPU's.
    """
    config = planner_config or PlannerConfig()
    out: dict[str, float] = {}
    with model_folder(model, env_id) as folder:
        run = PlanEvalConfig(env_id=env_id, planner="cem", cost="keypoint", model=folder, episodes=1,
                             max_steps=warmup + decisions, stop_on_success=False, planner_config=config, device=device)
        size, loaded = validate(run)
        runner = EpisodeRunner(run, size, loaded)  # leaves the thread count alone; each measurement sets its own
        try:
            frames = config.imagined_per_decision
            gflop = decision_flops(runner) / 1e9
            out.update(decision_frames=float(frames), decision_gflop=gflop, decision_gflop_per_frame=gflop / frames,
                       decision_denoise_steps=float(run.num_steps or loaded.config.num_steps))
            precision = "bf16" if autocast_enabled(runner.model) else "fp32"
            out["decision_precision_is_bf16"] = float(precision == "bf16")
            if compiled:
                compile_denoiser(runner.model)
                start = time.perf_counter()
                decision_latencies(runner, max(threads), 0)  # one short episode: its first decision compiles
                out["decision_compile_episode_s"] = time.perf_counter() - start
            for t in threads:  # eager and compiled in turns, so that a change in the machine's load hits both
                latencies: dict[str, list[float]] = {"": [], "compiled_": []}
                for _ in range(rounds if compiled else 1):
                    with eager_calls(runner.model):
                        latencies[""] += list(decision_latencies(runner, t, warmup))
                    if compiled:
                        latencies["compiled_"] += list(decision_latencies(runner, t, warmup))
                for mode, values in latencies.items():
                    if values:
                        out[f"decision_s_cem_{mode}{t}_threads"] = float(np.median(values))
        finally:
            runner.close()
    if resolve_device(device).type != "cpu":
        return out
    for t in threads:
        key = f"matmul_gflops_{precision}_{t}_threads"
        if peak is None or key not in peak:
            with torch_threads(t):
                out[key] = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
        floor = gflop / (out[key] if key in out else peak[key])
        out[f"decision_floor_s_{t}_threads"] = floor
        for mode in ("", "compiled_")[:1 + compiled]:
            out[f"decision_vs_floor_{mode}{t}_threads"] = out[f"decision_s_cem_{mode}{t}_threads"] / floor
    return out

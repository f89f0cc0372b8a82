"""Bench's thread-count figures: matmul peaks with 1 and 2 threads, one decision's FLOPs, floor and latency."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from conftest import tiny_config
from worldvid.model import WorldModel, WorldModelConfig


@pytest.fixture
def odd_threads():
    """A torch thread count no section uses (3), so a restored count is told apart from one left behind."""
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_model(tmp_path):
    model = WorldModel(tiny_config())
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


@pytest.fixture
def traced_only(monkeypatch):
    """``torch.compile`` traces with dynamo and runs the graph eager: these tests time the compiled path beside the
    eager one; inductor's code generation (30-60 s per graph on a cold cache) is tested in tests/test_compiled.py."""
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager"))


def positive_finite(figures: dict[str, float], keys: list[str]) -> None:
    for key in keys:
        assert key in figures, key
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])


def test_peak_with_each_thread_count_restores_the_count(odd_threads):
    from worldvid.experiments.bench import bench_peak

    figures = bench_peak(threads=(1, 2), n=64, repeats=1)
    positive_finite(figures, [f"matmul_gflops_{d}{t}" for d in ("fp32", "bf16")
                              for t in ("", "_1_threads", "_2_threads")])
    assert torch.get_num_threads() == odd_threads


def test_decision_flops_floor_and_latency_per_thread_count(tiny_model, odd_threads, traced_only):
    from worldvid.agents import PlannerConfig
    from worldvid.experiments.bench import autocast_enabled, denoiser_flops
    from worldvid.experiments.bench_floor import bench_floor

    model, folder = tiny_model
    precision = "bf16" if autocast_enabled(model) else "fp32"  # fp32 on CPUs without native bf16
    budget = PlannerConfig(candidates=4, horizon=2, iterations=2, elites=2)
    peak = {f"matmul_gflops_{precision}_1_threads": 3.0}  # the 2-thread peak is left for the section to measure
    figures = bench_floor(folder, decisions=2, warmup=1, planner_config=budget, peak=peak, device="cpu")

    assert torch.get_num_threads() == odd_threads
    positive_finite(figures, ["decision_frames", "decision_gflop", "decision_gflop_per_frame", "decision_denoise_steps",
                              f"matmul_gflops_{precision}_2_threads", "decision_compile_episode_s"]
                    + [f"decision_{k}_{t}_threads" for k in ("s_cem", "floor_s", "vs_floor", "s_cem_compiled",
                                                             "vs_floor_compiled") for t in (1, 2)])
    assert figures["decision_precision_is_bf16"] == float(precision == "bf16")
    assert f"matmul_gflops_{precision}_1_threads" not in figures  # given, not measured again
    assert figures["decision_frames"] == 4 * 2 * 2 and figures["decision_denoise_steps"] == 1  # PlanEvalConfig's
    # candidates x horizon x iterations frames, each one Euler step of the denoiser at the planner's batch (4)
    per_frame = denoiser_flops(model, 4) / 4 / 1e9
    assert figures["decision_gflop_per_frame"] == pytest.approx(per_frame, rel=1e-9)
    assert figures["decision_gflop"] == pytest.approx(16 * per_frame, rel=1e-9)
    for t, gflops in ((1, 3.0), (2, figures[f"matmul_gflops_{precision}_2_threads"])):
        floor = figures[f"decision_floor_s_{t}_threads"]
        assert floor == pytest.approx(figures["decision_gflop"] / gflops, rel=1e-12)
        for mode in ("", "compiled_"):
            assert figures[f"decision_vs_floor_{mode}{t}_threads"] == pytest.approx(
                figures[f"decision_s_cem_{mode}{t}_threads"] / floor, rel=1e-12)


def test_decision_flops_follow_a_decaying_population(tiny_model):
    from worldvid.agents import PlannerConfig
    from worldvid.experiments.bench import denoiser_flops
    from worldvid.experiments.bench_floor import decision_flops
    from worldvid.experiments.plan_config import PlanEvalConfig, validate
    from worldvid.experiments.plan_workers import EpisodeRunner

    model, folder = tiny_model
    budget = PlannerConfig(candidates=8, horizon=2, iterations=3, elites=2, population_decay=0.5)  # 8, 4, 2 drawn
    run = PlanEvalConfig(env_id="worldvid/PointReach-v0", model=str(folder), planner_config=budget, device="cpu")
    runner = EpisodeRunner(run, *validate(run))
    assert decision_flops(runner) == 2 * sum(denoiser_flops(model, n) for n in (8, 4, 2))  # horizon x 1 Euler step
    runner.env.close()


def test_denoiser_share_of_peak_at_each_batch():
    from worldvid.experiments.bench import bench_model, torch_threads

    config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), num_steps=1)
    peak = {"matmul_gflops_fp32": 1.0, "matmul_gflops_bf16": 1.0}
    with torch_threads(1):  # tiny ops with 2 threads crawl on 2 cores shared with another job
        figures = bench_model(config, batches=(1,), peak=peak, device="cpu", denoiser_batches=(2, 4), compiled=False)
    positive_finite(figures, ["denoiser_gflops_b2", "denoiser_gflops_b4", "denoiser_fraction_of_peak_b2",
                              "denoiser_fraction_of_peak_b4", "denoiser_fraction_of_peak"])
    assert figures["denoiser_fraction_of_peak"] == figures["denoiser_fraction_of_peak_b4"]  # the largest batch
    assert figures["denoiser_fraction_of_peak_b2"] == figures["denoiser_gflops_b2"]  # a peak of 1 GFLOP/s


def test_the_compiled_denoiser_is_timed_beside_the_eager_one(traced_only):
    from worldvid.experiments.bench import bench_model, torch_threads

    peak = {"matmul_gflops_fp32": 1.0, "matmul_gflops_bf16": 1.0}
    with torch_threads(1):  # batch 4 of the TINY model: the graph tests/test_compiled.py compiles
        figures = bench_model(tiny_config(), batches=(1,), peak=peak, device="cpu", denoiser_batches=(4,))
    positive_finite(figures, ["denoiser_gflops_b4", "denoiser_gflops_compiled_b4", "denoiser_fraction_of_peak_compiled_b4"])
    assert figures["denoiser_fraction_of_peak_compiled_b4"] == figures["denoiser_gflops_compiled_b4"]
    assert figures["denoiser_fraction_of_peak"] == figures["denoiser_fraction_of_peak_b4"]  # the eager share


def test_budgets_are_timed_side_by_side_with_their_frames(tiny_model, odd_threads):
    from worldvid.agents import PlannerConfig
    from worldvid.experiments.bench_budgets import time_budgets

    budgets = {"fixed": PlannerConfig(candidates=8, horizon=2, iterations=2, elites=2),
               "icem": PlannerConfig(candidates=8, horizon=2, iterations=2, elites=2, population_decay=0.5, keep_elites=2)}
    result = time_budgets("worldvid/PointReach-v0", str(tiny_model[1]), budgets, rounds=1, decisions=1)
    assert result["fixed"]["frames"] == 32 and result["icem"]["frames"] == 24
    positive_finite({k: v["s_per_decision_median"] for k, v in result.items()}, list(result))
    assert torch.get_num_threads() == 3  # the thread count is restored

"""Ray Tune sweeps on tiny trials (both families), and bench's JSON fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worldvid.data.collect import collect
from worldvid.model import WorldModel, WorldModelConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    collect("worldvid/PointReach-v0", 4, root / "data", size=16, progress=False)
    config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id="worldvid/PointReach-v0", num_steps=1)
    WorldModel(config).save_pretrained(root / "model")
    return root


def run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "worldvid.cli", *args], capture_output=True, text=True, timeout=600, env=env, **kw)


def test_planner_sweep_with_two_trials_writes_csv_and_plot_and_resumes(tiny):
    out = tiny / "planner_sweep"
    args = ["sweep", "--family", "planner", "--model", str(tiny / "model"), "--env", "worldvid/PointReach-v0",
            "--episodes", "1", "--max-episode-steps", "2", "--planners", "cem", "mppi", "--denoise-steps", "1", "--candidates", "4",
            "--horizons", "2", "--out", str(out)]
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["planner", "num_steps"] and len(lines) == 3
    assert {"success_rate", "seconds_per_decision"} <= set(lines[0].split(","))
    assert (out / "frontier.png").stat().st_size > 1000
    again = run(args)  # restores the finished experiment instead of running it anew
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "results.csv").read_text().splitlines()[1:] == lines[1:]


def test_model_family_trial_trains_and_reports(tiny):
    # The Tune plumbing is the planner test's; this checks what one model-size trial measures, in-process.
    from worldvid.experiments.sweep import model_trial

    figures = model_trial({"data": str(tiny / "data"), "steps": 2, "seed": 0, "channels": [8, 16], "device": "cpu"})
    assert figures["parameters"] > 0 and figures["train_seconds"] > 0
    assert figures["error_px_step8"] >= 0 and figures["copy_error_px_step8"] >= 0 and figures["ratio_vs_copy"] > 0


def test_model_sweep_refuses_bad_widths_before_any_work(tiny, tmp_path):
    from worldvid.experiments.sweep import run_sweep

    with pytest.raises(ValueError, match="divisible by norm_groups"):
        run_sweep("model", tmp_path / "sweep", {"data": str(tiny / "data"), "steps": 1, "seed": 0},
                  grid={"channels": [[16, 32], [12, 24]]})
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        run_sweep("model", tmp_path / "sweep", {"data": str(tiny / "data"), "steps": 1, "seed": 0, "device": "gpu"})
    assert not (tmp_path / "sweep").exists()


def test_bench_json_fields_present_and_positive(tmp_path):
    done = run(["bench", "--sections", "peak", "sim", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "bench.json").read_text())
    for key in ("matmul_gflops_fp32", "matmul_gflops_bf16", "matmul_gflops_fp32_1_threads", "matmul_gflops_bf16_2_threads",
                "sim_frames_per_s"):
        assert figures[key] > 0, key


def test_bench_model_sections_run_on_the_given_device_and_a_bad_one_fails_first():
    from worldvid.experiments.bench import bench_dream, bench_model, bench_train, run_bench

    config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id="worldvid/PointReach-v0",
                              num_steps=1)
    figures = {**bench_model(config, batches=(1, 2), peak={"matmul_gflops_fp32": 1.0, "matmul_gflops_bf16": 1.0},
                             device="cpu", denoiser_batches=(2,), compiled=False),  # (compiled: test_bench_floor)
               **bench_train(config, batch=2, steps=1, device="cpu"),
               **bench_dream(WorldModel(config), num_envs=(1, 2), steps=1, device="cpu")}
    for key in ("imagined_frames_per_s_b2", "denoiser_gflops_b2", "denoiser_fraction_of_peak", "train_samples_per_s",
                "dream_env_steps_per_s_2_envs"):
        assert figures[key] > 0, key
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        run_bench(["sim"], device="gpu")


def test_bench_planner_latency_and_eval_scaling_sections(ray_session):
    from worldvid.agents import PLANNER_NAMES, PlannerConfig
    from worldvid.experiments.bench_plan import bench_eval_scaling, bench_planners

    budget = PlannerConfig(candidates=4, horizon=2, iterations=1)
    latency = bench_planners(decisions=2, planner_config=budget, device="cpu")
    assert latency["planner_candidates"] == 4 and latency["planner_horizon"] == 2
    for planner in PLANNER_NAMES:
        assert latency[f"decision_s_{planner}"] > 0, planner
    assert latency["decision_s_random"] < latency["decision_s_cem"]  # random imagines nothing
    scaling = bench_eval_scaling(episodes=2, steps=2, planner_config=budget, lockstep=(2,))
    for key in ("eval_episodes_per_s_1_workers", "eval_episodes_per_s_2_workers", "eval_speedup_2_workers",
                "eval_decision_s_1_workers", "eval_decision_s_2_workers", "eval_episodes_per_s_1_workers_lockstep_2",
                "eval_lockstep_speedup_2_workers_2"):
        assert scaling[key] > 0, key

"""Planner evaluation: same results for 1 and 2 workers, a killed worker loses nothing, bad input, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from worldvid.agents import PlannerConfig
from worldvid.agents.mpc import wilson_interval
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.experiments.plan_workers import FaultInjection
from worldvid.experiments.plan_table import format_table
from worldvid.data.store import EpisodeStore, StoreMismatchError, StoreSpec
from worldvid.model import WorldModel, WorldModelConfig

POINT = "worldvid/PointReach-v0"
TINY_BUDGET = PlannerConfig(candidates=4, horizon=2, iterations=1, elites=2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A training-run folder RUN holding an untrained 16x16 PointReach model in RUN/model."""
    run = tmp_path_factory.mktemp("run")
    WorldModel(WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id=POINT,
                                num_steps=1)).save_pretrained(run / "model")
    return run


def model_config(run, **overrides) -> PlanEvalConfig:
    base = PlanEvalConfig(env_id=POINT, planner="cem", cost="keypoint", model=str(run), episodes=3, max_steps=6,
                          planner_config=TINY_BUDGET)
    return replace(base, **overrides)


def assert_same_episodes(a, b) -> None:
    assert len(a.results) == len(b.results)
    for x, y in zip(a.results, b.results):
        assert x.seed == y.seed and x.success == y.success and x.final_distance == y.final_distance
        for key in ("actions", "frames", "imagined"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key), err_msg=key)


def test_results_are_identical_for_one_and_two_workers(tiny_run, tmp_path, ray_session):
    one = evaluate_planner(model_config(tiny_run, workers=1, device="cpu"), out=tmp_path / "w1", progress=False)
    two = evaluate_planner(model_config(tiny_run, workers=2, device="cpu"), out=tmp_path / "w2", progress=False)
    assert_same_episodes(one, two)
    assert [r.seed for r in two.results] == [0, 1, 2]
    summary = json.loads((tmp_path / "w2" / "summary.json").read_text())
    assert summary["summary"]["episodes"] == 3 and summary["summary"]["frame_size"] == 16
    assert summary["summary"]["model_calls_per_action"] == pytest.approx(1.0)
    saved = np.load(tmp_path / "w2" / "episodes" / "episode_0002.npz")
    np.testing.assert_array_equal(saved["actions"], two.results[2].actions)
    assert saved["frames"].shape == (7, 16, 16, 3) and saved["imagined"].shape == (6, 2, 16, 16, 3)


def test_a_worker_killed_mid_run_loses_no_episode(tmp_path, ray_session):
    config = PlanEvalConfig(env_id=POINT, planner="cem", cost="keypoint", oracle=True, episodes=3, max_steps=5,
                            size=16, planner_config=TINY_BUDGET)
    calm = evaluate_planner(config, progress=False)
    disturbed = evaluate_planner(replace(config, workers=2), progress=False,
                                 _faults=FaultInjection(str(tmp_path), crash_at=0))
    assert (tmp_path / "crash-0-0").exists()  # a worker really died (os._exit) during episode 0
    assert_same_episodes(calm, disturbed)


def test_bad_input_fails_before_any_work(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="env_id"):
        evaluate_planner(model_config(tiny_run, env_id="worldvid/Reacher-v0"), progress=False)
    with pytest.raises(ValueError, match="frame_size"):
        evaluate_planner(model_config(tiny_run, size=32), progress=False)
    for bad in (dict(episodes=0), dict(workers=0), dict(execute=3), dict(max_steps=-1)):
        with pytest.raises(ValueError):
            evaluate_planner(model_config(tiny_run, **bad), out=tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="model"):
        evaluate_planner(model_config(tiny_run, model=None), progress=False)
    with pytest.raises(FileNotFoundError):
        evaluate_planner(model_config(tiny_run, model=str(tmp_path / "missing")), progress=False)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        evaluate_planner(model_config(tiny_run, device="gpu"), out=tmp_path / "bad", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            evaluate_planner(model_config(tiny_run, device="cuda"), out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_recording_into_a_store_of_other_data_fails_before_any_episode(tmp_path):
    store = tmp_path / "store"
    EpisodeStore.create(store, StoreSpec(POINT, (16, 16, 3), 2, "mixed", 0))
    config = PlanEvalConfig(env_id=POINT, planner="random", episodes=2, max_steps=3, size=16)
    with pytest.raises(StoreMismatchError, match="policy is 'mixed' there, 'plan:random/-/-' asked"):
        evaluate_planner(config, out=tmp_path / "out", record=store, progress=False)
    assert not (tmp_path / "out").exists()
    report = evaluate_planner(config, record=tmp_path / "fresh", progress=False)
    assert report.summary["recorded_store"] == str(tmp_path / "fresh") and len(EpisodeStore(tmp_path / "fresh")) == 2


def test_recording_episodes_that_start_at_their_goal_is_refused_before_any_episode_runs(tmp_path):
    # PushT seed 5007: the expert's 25 steps never reach the T, so the 25-step goal is the start and the
    # episode would end, a success, before any action; a store's episodes must be contiguous seeds with steps
    config = PlanEvalConfig(env_id="worldvid/PushT-v0", planner="random", episodes=2, seed=5006, goal_steps=25,
                            max_steps=3, size=16)
    with pytest.raises(ValueError, match=r"seeds \[5007\] start at their goal .* --no-early-stop"):
        evaluate_planner(config, out=tmp_path / "out", record=tmp_path / "store", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()
    report = evaluate_planner(config, out=tmp_path / "out", progress=False)  # without --record it plans as before
    assert report.results[1].steps == 0 and report.results[1].success
    report = evaluate_planner(replace(config, stop_on_success=False), record=tmp_path / "store",
                              progress=False)
    assert len(EpisodeStore(tmp_path / "store")) == 2 and report.results[1].steps == 3


def test_an_episode_without_step_records_cannot_become_training_data():
    from worldvid.agents.mpc import EpisodeResult

    bare = EpisodeResult(seed=3, success=False, first_success_step=None, final_distance=0.1,
                         actions=np.zeros((2, 2), np.float32), frames=np.zeros((3, 4, 4, 3), np.uint8),
                         goal_frame=np.zeros((4, 4, 3), np.uint8), decision_steps=np.arange(2),
                         latency_s=np.zeros(2), model_calls=np.ones(2), imagined=None)
    with pytest.raises(ValueError, match="seed 3 has no per-step rewards"):
        bare.to_episode(POINT, "plan")


def test_wilson_interval_and_table():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    row = {"label": "cem/keypoint/oracle", "model_name": "-", "goals": "task", "seeds": "0-9", "budget": "32x6x2",
           "success_rate": 1.0, "success_ci95": [0.72, 1.0], "final_distance_mean": 0.04, "seconds_per_decision": 0.2,
           "model_calls_per_action": 3.0, "episodes": 10, "episodes_per_second": 0.5}
    table = format_table([row])
    assert "| cem/keypoint/oracle | - | task | 0-9 | 32x6x2 | 100% | [72%, 100%] |" in table and "coverage" not in table
    push_t = {**row, "goals": "expert 25-step", "final_pose_success_mean": 0.6, "final_coverage_mean": 0.69,
              "final_angle_error_mean": 0.15}
    lines = format_table([push_t, row]).splitlines()  # a task's end-of-episode columns; '-' where a row lacks them
    assert lines[0].endswith("| pose success | final coverage | final angle err |")
    assert lines[2].endswith("| 60% | 0.69 | 0.150 |") and lines[3].endswith("| - | - | - |")


def test_plan_cli_end_to_end(tiny_run, tmp_path):
    """`worldvid plan` in a fresh process, with a planning video (real | goal | best imagined future)."""
    out = tmp_path / "plan"
    command = [sys.executable, "-m", "worldvid.cli", "plan", "--env", POINT, "--oracle", "--cost", "blur",
               "--episodes", "2", "--out", str(out), "--candidates", "8", "--horizon", "3", "--iterations", "1",
               "--max-episode-steps", "4", "--size", "16", "--seed", "5", "--record", str(tmp_path / "store"), "--video"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| cem/blur/oracle |" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [e["seed"] for e in summary["episodes"]] == [5, 6]
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["episode_0000.json", "episode_0000.npz",
                                                                    "episode_0001.json", "episode_0001.npz"]
    assert (out / "videos" / "episode_0001.mp4").stat().st_size > 0
    assert json.loads((out / "videos" / "episode_0001.json").read_text())["seed"] == 6  # the video's sidecar
    store = EpisodeStore(tmp_path / "store")  # the executed episodes, as training data
    assert store.spec.policy == "plan:cem/blur/oracle" and store.spec.seed == 5 and store.spec.frame_shape == (16, 16, 3)
    saved = np.load(out / "episodes" / "episode_0001.npz")
    recorded = store.read_episode(1)
    assert recorded.seed == 6 and recorded.num_steps == len(saved["actions"])
    np.testing.assert_array_equal(recorded.frames, saved["frames"])
    np.testing.assert_array_equal(recorded.actions, saved["actions"])
    np.testing.assert_array_equal(recorded.goal_frame, saved["goal_frame"])
    assert recorded.rewards.shape == (recorded.num_steps,) and recorded.success.shape == (recorded.num_steps,)
    bad = subprocess.run(command[:-7] + ["--candidates", "0", "--model", str(tiny_run)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "candidates must be a positive integer" in bad.stderr
    table = subprocess.run([sys.executable, "-m", "worldvid.cli", "table", str(out), str(out)], capture_output=True,
                           text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("| cem/blur/oracle | - | task | 5-6 | 8x3x1 |") == 2

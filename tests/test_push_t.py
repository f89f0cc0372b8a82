"""PushT: the coverage measure, the T's pose read back from frames, the pose cost, expert goals, and that the
scripted expert and the oracle planner with the pose cost really push the T toward its goal."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from worldvid.costs import make_cost
from worldvid.data.policies import expert_goal
from worldvid.envs import tee_geometry as tee
from worldvid.keypoints import locate_pose

ID = "worldvid/PushT-v0"


def test_coverage_is_the_share_of_the_goal_t_covered():
    goal = np.array([0.1, -0.05, 0.7])
    assert tee.coverage(goal, goal) == pytest.approx(1.0)
    for delta in (0.002, 0.01, 0.03):  # a shift along the bar: the bar loses delta x 0.08, the stem delta x 0.22
        shifted = goal + np.array([np.cos(0.7), np.sin(0.7), 0.0]) * delta
        assert tee.coverage(shifted, goal) == pytest.approx(1.0 - 0.30 * delta / tee.AREA, abs=1e-9)
    assert tee.coverage(goal + np.array([0.6, 0.0, 0.0]), goal) == 0.0
    turned = [tee.coverage(goal + np.array([0.0, 0.0, a]), goal) for a in (0.02, 0.1, 0.5, np.pi)]
    assert 1.0 > turned[0] > turned[1] > turned[2] > 0.0 and turned[3] < 0.7  # upside down: only the stem's middle


@pytest.mark.parametrize("size, position_tolerance, angle_tolerance", [(64, 0.01, 0.15), (32, 0.025, 0.4)])
def test_the_pose_is_read_back_from_frames_by_moments(size, position_tolerance, angle_tolerance):
    env = gym.make(ID, size=size, render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        pose = env.sample_goal_position(rng)
        env.set_state(np.array([0.45, 0.45, *pose]), np.zeros(5))
        position, yaw, visible = locate_pose(env.render(), env.object_colors["block"])
        assert bool(visible)
        error = np.linalg.norm(position.numpy() - env.world_to_pixel(pose[:2])) / env.pixels_per_unit
        assert error < position_tolerance
        assert abs(tee.wrap_angle(float(yaw) - pose[2])) < angle_tolerance  # the sign resolved: no flips by pi
    env.close()


def test_pose_cost_is_zero_at_the_goal_and_grows_with_the_pose_error():
    env = gym.make(ID, size=64, render_mode="rgb_array").unwrapped
    env.reset(seed=1)
    cost = make_cost("pose", ID)
    pusher_near = np.array([0.0, -0.26])  # just below the stem tip
    env.set_state(np.array([*pusher_near, 0.0, 0.0, 0.0]), np.zeros(5))
    goal = env.render()
    frames = []
    for pose, pusher in (((0.0, 0.0, 0.0), pusher_near), ((0.0, 0.0, 0.3), pusher_near), ((0.0, 0.0, 1.0), pusher_near),
                         ((0.1, 0.0, 1.0), pusher_near), ((0.1, 0.0, 1.0), (0.45, 0.45))):
        env.set_state(np.array([*pusher, *pose]), np.zeros(5))
        frames.append(env.render())
    values = cost(np.stack(frames), goal).numpy()
    assert values[0] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.diff(values) > 0), values  # turned more, moved too, then the pusher out of reach
    env.close()


def test_expert_goals_keep_the_start_state_and_are_reachable():
    env = gym.make(ID, size=32)
    task = env.unwrapped
    env.reset(seed=7)
    start, own_goal = task.get_sim_state(), task.goal_frame.copy()
    info = expert_goal(env, 25, seed=7)
    now = task.get_sim_state()
    assert np.array_equal(now["physics"], start["physics"])  # the start state is kept
    assert not np.array_equal(info["goal_frame"], own_goal) and np.array_equal(task.goal_frame, info["goal_frame"])
    assert info["coverage"] == pytest.approx(task.pose_errors()[0])
    again = gym.make(ID, size=32)
    again.reset(seed=7)
    assert np.array_equal(expert_goal(again, 25, seed=7)["goal_frame"], info["goal_frame"])  # deterministic
    with pytest.raises(ValueError, match="positive"):
        expert_goal(env, 0, seed=7)


def test_the_expert_pushes_the_t_toward_its_goal_and_random_actions_do_not():
    env = gym.make(ID, size=32)
    task = env.unwrapped
    rng = np.random.default_rng(0)
    gains = {"expert": [], "random": []}
    for seed in range(6):
        for name in gains:
            env.reset(seed=seed)
            start = task.pose_errors()[0]
            for _ in range(120):
                action = task.scripted_action() if name == "expert" else rng.uniform(-1, 1, 2).astype(np.float32)
                info = env.step(action)[-1]
            gains[name].append(info["coverage"] - start)
    assert np.mean(gains["expert"]) > 0.3 and np.mean(gains["expert"]) > np.mean(gains["random"]) + 0.3, gains


def test_oracle_pose_planner_on_expert_goals_reports_coverage_and_beats_random():
    from worldvid.agents import PlannerConfig
    from worldvid.experiments.plan_config import PlanEvalConfig, validate
    from worldvid.experiments.plan_eval import evaluate_planner

    base = PlanEvalConfig(env_id=ID, planner="cem", cost="pose", oracle=True, episodes=2, seed=5000, size=64,
                          goal_steps=25, max_steps=25, stop_on_success=False,
                          planner_config=PlannerConfig(candidates=32, horizon=6, iterations=2, elites=4))
    oracle = evaluate_planner(base, progress=False).summary
    random = evaluate_planner(PlanEvalConfig(**{**base.__dict__, "planner": "random"}), progress=False).summary
    assert {"final_coverage_mean", "final_angle_error_mean", "final_pose_success_mean"} <= set(oracle)
    assert oracle["final_coverage_mean"] > random["final_coverage_mean"] + 0.05, (oracle, random)
    assert oracle["successes"] >= 1 and random["successes"] == 0, (oracle, random)
    with pytest.raises(ValueError, match="goal_steps"):
        validate(PlanEvalConfig(**{**base.__dict__, "goal_steps": -1}))


def test_open_loop_scores_read_the_t_heading_and_count_a_lost_t_as_pi():
    from worldvid.evaluate import Windows, frame_scores, task_colors
    from worldvid.keypoints import task_has_heading
    from worldvid.metrics import heading_error

    env = gym.make(ID, size=64, render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    frames = []
    for yaw in (0.5, 0.8, 0.5):  # real; imagined turned by 0.3; imagined exact
        env.set_state(np.array([0.45, 0.45, 0.05, -0.05, yaw]), np.zeros(5))
        frames.append(env.render())
    env.close()
    real, turned, exact = frames
    error, seen = heading_error(np.stack([turned, exact, np.zeros_like(real)]), np.stack([real] * 3),
                                env.object_colors["block"])
    assert seen.all() and error[0] == pytest.approx(0.3, abs=0.05) and error[1] < 0.01 and error[2] == pytest.approx(np.pi)
    assert task_has_heading(ID) and not task_has_heading("worldvid/Push-v0")
    colors, names, goal_object = task_colors(ID)
    windows = Windows(np.stack([real] * 4)[None], np.zeros((1, 4, 2), np.float32), np.zeros((1, 1, 2), np.float32),
                      real[None, None])
    scores = frame_scores(turned[None, None], windows, colors, names.index(goal_object), heading=True)
    assert scores["goal_object_heading_error_rad"][0] == pytest.approx(0.3, abs=0.05)
    assert "goal_object_heading_error_rad" not in frame_scores(turned[None, None], windows, colors, 0)


def test_the_heading_split_keeps_windows_where_the_t_turned_apart_from_those_where_it_stood_still():
    from worldvid.evaluate import Windows, heading_split, task_colors
    from worldvid.experiments.open_loop import heading_split_lines
    from worldvid.metrics import heading_error

    env = gym.make(ID, size=64, render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    frame = {}
    for yaw in (0.5, 0.8, 1.1):
        env.set_state(np.array([0.45, 0.45, 0.05, -0.05, yaw]), np.zeros(5))
        frame[yaw] = env.render()
    env.close()
    colors, names, goal_object = task_colors(ID)
    context = np.stack([np.stack([frame[0.5]] * 4)] * 2)  # two windows, both from yaw 0.5
    real = np.stack([frame[1.1], frame[0.5]])[:, None]  # the first turns by 0.6 rad, the second stands still
    imagined = np.stack([frame[0.8], frame[0.8]])[:, None]  # both off by 0.3
    windows = Windows(context, np.zeros((2, 4, 2), np.float32), np.zeros((2, 1, 2), np.float32), real)
    color = tuple(colors[names.index(goal_object)])
    split = heading_split(imagined, windows, color)
    assert split["turned"] == [1] and split["still"] == [1]
    model, _ = heading_error(imagined[:, 0], real[:, 0], color)  # read back: about 0.26 rad each
    copy, _ = heading_error(context[:, -1], real[:, 0], color)  # about 0.53 and 0
    assert copy[0] > 0.4 and copy[1] < 0.01 and (model > 0.2).all()
    assert split["model_turned"] == [pytest.approx(model[0])] and split["copy_turned"] == [pytest.approx(copy[0])]
    assert split["model_still"] == [pytest.approx(model[1])] and split["copy_still"] == [pytest.approx(copy[1])]
    lines = heading_split_lines({"heading_split": split, "horizon": 1, "goal_object": "block"}, steps=(1,))
    assert len(lines) == 1 and "turned in 1 windows" in lines[0] and "stood still in 1 windows" in lines[0]
    none_turned = {**split, "turned": [0], "model_turned": [None], "copy_turned": [None]}
    assert "turned in" not in heading_split_lines({"heading_split": none_turned, "horizon": 1, "goal_object": "block"},
                                                  steps=(1,))[0]


def test_turn_sensitivity_is_zero_without_a_move_grows_with_one_and_needs_a_heading(tmp_path, store_dir):
    from worldvid.data.collect import collect
    from worldvid.data.store import EpisodeStore
    from worldvid.experiments.turn_sensitivity import sensitivity_table, turn_sensitivity

    collect(ID, 2, tmp_path / "tee", size=32, policy="subgoals", progress=False)
    store = EpisodeStore(tmp_path / "tee")
    unmoved = turn_sensitivity(store, 0.0, every=8, progress=False)  # the replay is exact
    assert unmoved["turned"]["windows"] > 0 and unmoved["frames_unchanged"] == 1.0
    assert unmoved["turned"]["mean"] == 0.0 and unmoved["still"]["mean"] == 0.0
    moved = turn_sensitivity(store, 1.5, every=8, progress=False)
    assert moved["turned"]["windows"] == unmoved["turned"]["windows"]
    assert moved["turned"]["mean"] > 0.0 and moved["frames_unchanged"] < 1.0
    assert "| +-1.5 px |" in sensitivity_table([moved])
    with pytest.raises(ValueError, match="has no object heading to turn"):
        turn_sensitivity(EpisodeStore(store_dir), 0.3, progress=False)


def _square_windows(model_shift: list[int], copy_shift: list[int], episode: list[int] | None):
    """Windows of one 16 px frame step with a red 3x3 square: the real one at x = 4, the model's moved by
    ``model_shift`` px and the last context frame's (copy-last-frame's) by ``copy_shift`` px, window by window."""
    from worldvid.evaluate import Windows

    def frames(shifts: list[int]) -> np.ndarray:
        out = np.zeros((len(shifts), 1, 16, 16, 3), np.uint8)
        for i, dx in enumerate(shifts):
            out[i, 0, 6:9, 4 + dx:7 + dx, 0] = 255
        return out

    n = len(model_shift)
    windows = Windows(frames(copy_shift), np.zeros((n, 1, 2), np.float32), np.zeros((n, 1, 2), np.float32),
                      frames([0] * n), None, None if episode is None else np.array(episode))
    return frames(model_shift), windows


def test_ratio_intervals_resample_whole_episodes_around_the_ratio_copy_last_frame_scores():
    from worldvid import evaluate
    from worldvid.experiments.open_loop import ratio_interval_lines

    red = np.array([[255.0, 0.0, 0.0]])
    imagined, windows = _square_windows([1] * 6, [3] * 6, [0, 0, 1, 1, 2, 2])
    exact = evaluate.ratio_intervals(imagined, windows, red, 0, heading=False, steps=(1,))
    assert exact["goal_object_error_px"] == {"1": [3.0, 3.0]}  # every resample: 3 px against 1
    # episodes of unlike ratios (4x, 3x, 0.5x): the interval holds the overall 16 px / 8 px and has a spread
    imagined, windows = _square_windows([1, 1, 1, 1, 2, 2], [4, 4, 3, 3, 1, 1], [0, 0, 1, 1, 2, 2])
    grouped = evaluate.ratio_intervals(imagined, windows, red, 0, heading=False, steps=(1,))["goal_object_error_px"]["1"]
    assert grouped[0] < 16 / 8 < grouped[1]
    # each window its own unit: more units than episodes, so a narrower interval (same seed, same draws count)
    imagined, windows = _square_windows([1, 1, 1, 1, 2, 2] * 4, [4, 4, 3, 3, 1, 1] * 4, None)
    alone = evaluate.ratio_intervals(imagined, windows, red, 0, heading=False, steps=(1,))["goal_object_error_px"]["1"]
    assert grouped[1] - grouped[0] > alone[1] - alone[0] > 0
    report = {"ratio_intervals": exact, "goal_object": "block",
              "model": {"goal_object_error_px": [1.0]}, "copy_last_frame": {"goal_object_error_px": [3.0]}}
    assert ratio_interval_lines(report) == [
        "step 1 block ratio to copy-last, 95% interval over episodes (2000 bootstrap resamples): position 3.0x "
        "[3.0, 3.0]"]

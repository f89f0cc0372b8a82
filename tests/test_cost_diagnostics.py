"""Cost diagnostics: the rank maths by hand, a good cost scoring high and random numbers near zero on real expert
episodes, heat maps that place the goal object where asked, and the files ``diagnose_costs`` writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from worldvid.costs import BlurCost, LearnedCost, make_cost
from worldvid.experiments.cost_diagnostics import (
    FRESH_SEED, _spearman_numpy, average_ranks, descent_share, diagnose_costs, episode_costs, heat_map,
    plot_heat_map, random_state_pairs, record_expert_episodes, spearman, state_distance_correlation,
    steps_to_go_correlation,
)
from worldvid.goal_distance import GoalDistance, GoalDistanceConfig

POINT = "worldvid/PointReach-v0"
SIZE = 16


class RandomCost:
    """A cost that ignores the frames: seeded uniform numbers, float32 [...]."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, frames, goal) -> torch.Tensor:
        return torch.rand(tuple(torch.as_tensor(frames).shape[:-3]), generator=self.generator)


@pytest.fixture(scope="module")
def experts():
    return record_expert_episodes(POINT, SIZE, episodes=4, seed=FRESH_SEED, progress=False)


@pytest.fixture(scope="module")
def pairs():
    return random_state_pairs(POINT, SIZE, pairs=60, seed=FRESH_SEED + 4, progress=False)


def test_ranks_and_spearman_match_a_hand_computed_example_with_ties():
    np.testing.assert_allclose(average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    np.testing.assert_allclose(average_ranks([7, 7, 7]), [2, 2, 2])
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]: cov 4.5, var 4.5 and 5 -> rho = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    x, y = [1, 2, 2, 3], [10, 20, 30, 40]
    for rho in (spearman, _spearman_numpy):
        assert rho(x, y) == pytest.approx(3 / math.sqrt(10))
        assert rho(x, [-v for v in y]) == pytest.approx(-3 / math.sqrt(10))
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, np.nan, 2, 3], [1, 0, 2, 3]) == pytest.approx(1.0)  # the non-finite pair is left out
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))


def test_steps_to_go_and_descent_share_on_hand_made_costs():
    # episode 1 falls every step; episode 2 stalls once: costs [3, 3, 1] against steps-to-go [3, 2, 1] give
    # ranks [2.5, 2.5, 1] and [3, 2, 1], rho = 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2
    per_episode = [np.array([5.0, 4, 3, 2, 1]), np.array([3.0, 3, 1, 0])]
    result = steps_to_go_correlation(per_episode)
    assert result["episode_mean"] == pytest.approx((1 + math.sqrt(3) / 2) / 2)
    assert result["pooled"] > 0.9
    assert descent_share(per_episode) == pytest.approx(6 / 7)  # 4 of 4 drops, then 2 of 3
    assert math.isnan(descent_share([])) and math.isnan(steps_to_go_correlation([])["pooled"])


def test_keypoint_cost_ranks_expert_progress_and_random_numbers_do_not(experts, pairs):
    assert all(e.success_step for e in experts) and all(e.frames.shape[1:] == (SIZE, SIZE, 3) for e in experts)
    keypoint, noise = make_cost("keypoint", env_id=POINT), RandomCost()
    good, bad = episode_costs(keypoint, experts), episode_costs(noise, experts)
    assert [c.shape for c in good] == [(e.success_step + 1,) for e in experts]
    assert steps_to_go_correlation(good)["pooled"] > 0.8 and steps_to_go_correlation(good)["episode_mean"] > 0.8
    assert abs(steps_to_go_correlation(bad)["pooled"]) < 0.3
    assert descent_share(good) > 0.8 and 0.2 < descent_share(bad) < 0.8
    assert state_distance_correlation(keypoint, pairs) > 0.8
    assert abs(state_distance_correlation(noise, pairs)) < 0.3


def _panels(figure) -> list[str]:
    return [ax.get_gid() for ax in figure.axes if (ax.get_gid() or "").startswith("cost:")]


def test_heat_map_is_lowest_near_the_goal_and_has_one_panel_per_cost(tmp_path):
    from matplotlib.image import imread

    costs = {"keypoint": make_cost("keypoint", env_id=POINT), "pixel": make_cost("pixel"), "random": RandomCost()}
    heat = heat_map(POINT, costs, tmp_path / "heat.png", size=SIZE, grid=7, seed=FRESH_SEED, progress=False)
    assert heat.path == tmp_path / "heat.png" and sorted(p.name for p in tmp_path.iterdir()) == ["heat.png"]
    assert _panels(plot_heat_map(heat)) == ["cost:keypoint", "cost:pixel", "cost:random"]
    assert abs(imread(heat.path).shape[1] - (2.6 + 3.4 * len(costs)) * 110) <= 1  # goal image + 3 panels (+-1 px: rounding differs by matplotlib version)
    values = heat.costs["keypoint"]
    assert values.shape == (7, 7) and np.isfinite(values).all()
    i, j = np.unravel_index(np.argmin(values), values.shape)
    spacing = heat.xs[1] - heat.xs[0]
    assert np.hypot(heat.xs[j] - heat.goal[0], heat.ys[i] - heat.goal[1]) <= spacing
    distance = np.hypot(heat.xs[None, :] - heat.goal[0], heat.ys[:, None] - heat.goal[1])
    assert spearman(values, distance) > 0.9


@pytest.mark.parametrize("env_id", ["worldvid/Push-v0", "worldvid/Reacher-v0"])
def test_heat_map_places_the_goal_object_and_blanks_impossible_placements(env_id):
    # heat_map itself raises if a placed object is not where the grid asked; Push blanks cells with no room for
    # the pusher behind the block, Reacher those out of the arm's reach (the centre, the corners)
    heat = heat_map(env_id, {"keypoint": make_cost("keypoint", env_id=env_id)}, size=SIZE, grid=5, progress=False)
    values = heat.costs["keypoint"]
    assert np.isnan(values).any() and np.isfinite(values).sum() >= 8
    i, j = np.unravel_index(np.nanargmin(values), values.shape)
    assert np.hypot(heat.xs[j] - heat.goal[0], heat.ys[i] - heat.goal[1]) <= heat.xs[1] - heat.xs[0]


def test_diagnose_costs_writes_strict_json_and_the_png_with_blur_and_an_untrained_learned_cost(tmp_path, capsys):
    learned = LearnedCost(GoalDistance(GoalDistanceConfig(frame_size=SIZE, env_id=POINT)))
    costs = {"keypoint": make_cost("keypoint", env_id=POINT), "blur": BlurCost(), "learned": learned}
    out = tmp_path / "diag"
    report = diagnose_costs(POINT, costs, out, size=SIZE, episodes=2, pairs=10, grid=5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["diagnostics.json", "heat_map.png"]  # no temporary left
    assert (out / "heat_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "diagnostics.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert on_disk == report and list(report["costs"]) == list(costs)
    assert report["seeds"] == {"expert": [FRESH_SEED, FRESH_SEED + 1], "pairs": [FRESH_SEED + 2, FRESH_SEED + 21],
                               "heat_map": FRESH_SEED}
    for row in report["costs"].values():
        assert set(row) == {"steps_to_go_spearman_pooled", "steps_to_go_spearman_episode_mean", "descent_share",
                            "state_distance_spearman", "heat_map"}
        assert 0.0 <= row["descent_share"] <= 1.0
    assert np.array(report["heat_map"]["costs"]["blur"], dtype=float).shape == (5, 5)
    table = capsys.readouterr().out
    assert all(name in table for name in costs) and "descent" in table


def test_diagnostics_refuse_an_env_that_is_not_a_worldvid_task(tmp_path):
    with pytest.raises(ValueError, match="worldvid task"):
        diagnose_costs("CartPole-v1", {"pixel": make_cost("pixel")}, tmp_path, episodes=1, pairs=1, progress=False)


def test_push_t_heat_map_places_the_t_at_the_goal_yaw_and_the_pose_cost_is_lowest_at_the_goal():
    from worldvid.envs.factory import make_pixel_env
    from worldvid.experiments.heat_map_placement import placed_state, placement

    env_id = "worldvid/PushT-v0"
    heat = heat_map(env_id, {"pose": make_cost("pose", env_id=env_id)}, size=32, grid=5, progress=False)
    values = heat.costs["pose"]
    assert np.isfinite(values).sum() >= 8
    i, j = np.unravel_index(np.nanargmin(values), values.shape)
    assert np.hypot(heat.xs[j] - heat.goal[0], heat.ys[i] - heat.goal[1]) <= heat.xs[1] - heat.xs[0]
    with make_pixel_env(env_id, size=16) as env:
        env.reset(seed=3)
        task = env.unwrapped
        task.set_sim_state(placed_state(task, task.get_sim_state(), placement(task, np.array([0.1, -0.05]))))
        np.testing.assert_allclose(task.block_pose(), [0.1, -0.05, task.goal_yaw], atol=1e-9)
        assert np.linalg.norm(task.object_positions()["pusher"] - [0.1, -0.05]) > 0.2  # clear of the T


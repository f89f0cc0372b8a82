"""Goal images replayed from recorded episodes (``ReplayedGoals``): planning on Gymnasium's MuJoCo envs, which have
no goal image of their own, toward frames a policy reached N steps after a start state of a held-out episode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from worldvid.agents import SimulatorDynamics
from worldvid.agents.base import History
from worldvid.agents.mpc import MPCEpisode
from worldvid.agents.random_shooting import RandomPlanner
from worldvid.data.collect import collect
from worldvid.data.dataset import split_episodes
from worldvid.data.store import EpisodeStore
from worldvid.envs.factory import make_pixel_env
from worldvid.envs.replayed_goals import GoalSource, ReplayedGoals
from worldvid.experiments.plan_config import PlanEvalConfig, make_plan_env, validate
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.agents import PlannerConfig

GOAL_STEPS = 6


@pytest.fixture(scope="module")
def reacher_store(tmp_path_factory):
    """10 random Reacher-v5 episodes of 20 steps at 16 px (the last one held out)."""
    root = tmp_path_factory.mktemp("reacher_v5") / "store"
    collect("Reacher-v5", 10, root, size=16, policy="random", max_steps=20, progress=False)
    return root


def test_collect_max_steps_shortens_episodes_and_is_kept_in_the_store(reacher_store, tmp_path):
    with EpisodeStore(reacher_store) as store:
        assert store.spec.env_kwargs == {"max_episode_steps": 20}
        assert {store.episode_length(i) for i in store.episode_ids} == {20}  # Reacher-v5's own limit is 50
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        collect("Reacher-v5", 1, tmp_path / "s", size=16, max_steps=0, progress=False)
    assert not (tmp_path / "s").exists()


def sources_of(root) -> list[GoalSource]:
    with EpisodeStore(root) as store:
        return [GoalSource(e.seed, e.actions, e.frames) for e in map(store.read_episode, store.episode_ids)]


def reacher(sources, **kw) -> ReplayedGoals:
    return ReplayedGoals(make_pixel_env("Reacher-v5", 16), sources, kw.pop("goal_steps", GOAL_STEPS), **kw)


def test_reset_replays_the_recorded_state_and_the_recorded_actions_reach_the_goal(reacher_store):
    sources = sources_of(reacher_store)
    env = reacher(sources)
    starts = set()
    for seed in range(6):
        observation, info = env.reset(seed=seed)
        source, t0 = sources[info["source"]], info["start_step"]
        starts.add((info["source"], t0))
        assert info["source"] == seed % len(sources) and 0 <= t0 <= source.steps - GOAL_STEPS
        np.testing.assert_array_equal(observation, source.frames[t0])
        np.testing.assert_array_equal(info["goal_frame"], source.frames[t0 + GOAL_STEPS])
        np.testing.assert_array_equal(info["past_frames"][-1], observation)
        assert info["past_actions"].shape == (t0, 2) and info["state_distance"] >= 0
        for step, action in enumerate(source.actions[t0:t0 + GOAL_STEPS], 1):
            observation, _, terminated, truncated, info = env.step(action)
            assert not terminated and not truncated
            assert np.abs(observation.astype(int) - source.frames[t0 + step]).mean() <= 1.0
        assert info["success"] and info["is_success"] and info["state_distance"] < 1e-6
    assert len(starts) == 6  # the seeds give different starts


def test_other_actions_leave_the_goal_unreached_and_the_episode_ends_at_its_limit(reacher_store):
    env = reacher(sources_of(reacher_store), tolerance=1e-3, max_steps=4)
    _, info = env.reset(seed=2)
    for step in range(4):
        _, _, _, truncated, info = env.step(np.array([1.0, -1.0], np.float32))
        assert truncated == (step == 3)
    assert not info["success"] and info["state_distance"] > 1e-3


def test_a_recording_that_does_not_replay_or_is_too_short_is_refused(reacher_store):
    source = sources_of(reacher_store)[0]
    altered = dataclasses.replace(source, frames=source.frames[:, ::-1].copy())  # upside down: another scene
    with pytest.raises(ValueError, match="does not replay"):
        reacher([altered]).reset(seed=0)
    with pytest.raises(ValueError, match="no recorded episode has the 50 steps"):
        reacher([source], goal_steps=50)
    with pytest.raises(ValueError, match="goal_steps and max_steps must be >= 1"):
        reacher([source], goal_steps=0)


def test_the_oracle_simulates_from_the_replayed_state_and_leaves_it_unchanged(reacher_store):
    sources = sources_of(reacher_store)
    env = reacher(sources)
    observation, info = env.reset(seed=4)
    source, t0 = sources[info["source"]], info["start_step"]
    before = env.get_sim_state()
    oracle = SimulatorDynamics(env)
    history = History.start(observation, 4, 2)
    recorded = torch.as_tensor(source.actions[t0:t0 + GOAL_STEPS])[None].repeat(2, 1, 1)
    frames = oracle.imagine(history, recorded).numpy()
    assert frames.shape == (2, GOAL_STEPS, 16, 16, 3)
    assert np.abs(frames[0].astype(int) - source.frames[t0 + 1:t0 + 1 + GOAL_STEPS]).mean() <= 1.0
    np.testing.assert_array_equal(oracle.imagine_last(history, recorded).numpy()[:, 0], frames[:, -1])
    for saved, now in zip(before, env.get_sim_state()):
        np.testing.assert_array_equal(saved, now)


def test_the_planner_history_starts_with_the_recorded_motion(reacher_store):
    sources = sources_of(reacher_store)
    env = reacher(sources)
    planner = RandomPlanner(env.action_space.low, env.action_space.high)
    seed = next(s for s in range(20) if env.reset(seed=s)[1]["start_step"] >= 5)  # a start with 4 steps behind it
    episode = MPCEpisode(env, planner, seed, context=4)
    _, info = env.reset(seed=seed)
    source, t0 = sources[info["source"]], info["start_step"]
    np.testing.assert_array_equal(episode.history.frames, source.frames[t0 - 3:t0 + 1])
    np.testing.assert_array_equal(episode.history.actions, source.actions[t0 - 4:t0])


def test_plan_takes_goals_from_the_held_out_episodes_and_the_oracle_beats_random(reacher_store):
    with EpisodeStore(reacher_store) as store:
        held = split_episodes(store)[1]
        held_seeds = {store.read_episode(i).seed for i in held}
    base = PlanEvalConfig(env_id="Reacher-v5", goal_store=str(reacher_store), goal_steps=GOAL_STEPS, episodes=3,
                          size=16, goal_tolerance=0.01, planner_config=PlannerConfig(candidates=24, horizon=4))
    env = make_plan_env(base, 16)
    assert {s.seed for s in env.sources} == held_seeds
    env.close()
    oracle = evaluate_planner(dataclasses.replace(base, oracle=True, cost="pixel"), progress=False).summary
    random = evaluate_planner(dataclasses.replace(base, planner="random"), progress=False).summary
    assert oracle["final_distance_mean"] < 0.5 * random["final_distance_mean"]
    assert oracle["successes"] >= 2 and oracle["successes"] > random["successes"]


def test_plan_refuses_a_goal_store_without_goal_steps_or_of_another_env(reacher_store, store_dir):
    with pytest.raises(ValueError, match="goal_store needs goal_steps >= 1"):
        validate(PlanEvalConfig(env_id="Reacher-v5", goal_store=str(reacher_store), oracle=True, cost="pixel"))
    with pytest.raises(ValueError, match="holds .* episodes, not Reacher-v5"):
        validate(PlanEvalConfig(env_id="Reacher-v5", goal_store=str(store_dir), goal_steps=3, oracle=True,
                                cost="pixel", size=16))


def test_table_rows_say_where_the_goals_came_from_and_how_a_video_was_scored(reacher_store):
    from worldvid.experiments.plan_table import config_columns

    config = PlanEvalConfig(env_id="Reacher-v5", goal_store=str(reacher_store), goal_steps=10,
                            planner_config=PlannerConfig(reduce="mean"))
    columns = config_columns(config)
    assert columns["goals"] == "held-out 10-step (store, tol 0.02)" and columns["budget"] == "32x6x2 mean"
    assert config_columns(PlanEvalConfig(env_id="Reacher-v5"))["budget"] == "32x6x2"  # 'final' is not named

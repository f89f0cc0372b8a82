"""Stable-Baselines3 on worldvid (issue 16): the small-frame features extractor, PPO through SB3's own API on a
task and on Dream-v0's batched vector env exposed as one SB3 VecEnv (one model for all sub-envs)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402

from worldvid.envs import DREAM_ID  # noqa: E402
from worldvid.model import WorldModel, WorldModelConfig  # noqa: E402
from worldvid.sb3 import SmallFrameCNN, sb3_vec_env, small_frame_policy_kwargs  # noqa: E402

TASK = "worldvid/PointReach-v0"
TINY_PPO = dict(n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=small_frame_policy_kwargs(features_dim=32),
                device="cpu", seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("sb3_run")
    torch.manual_seed(0)
    WorldModel(WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id=TASK,
                                num_steps=1)).save_pretrained(run / "model")
    return str(run)


def image(c: int, size: int) -> spaces.Box:
    return spaces.Box(0, 255, (c, size, size), np.uint8)


def test_small_frame_cnn_takes_16_to_64_px_frames_and_stacks_dict_frames_as_channels():
    for size in (16, 32, 64):
        net = SmallFrameCNN(image(3, size), features_dim=24)
        assert net(torch.rand(5, 3, size, size)).shape == (5, 24)
    both = spaces.Dict({"observation": image(3, 32), "desired_goal": image(3, 32)})
    net = SmallFrameCNN(both, features_dim=8)
    assert net.cnn[0].in_channels == 6
    obs = {"observation": torch.rand(2, 3, 32, 32), "desired_goal": torch.rand(2, 3, 32, 32)}
    out = net(obs)
    assert out.shape == (2, 8)
    obs["desired_goal"] = torch.rand(2, 3, 32, 32)
    assert not torch.equal(net(obs), out)  # the goal frame enters the features
    with pytest.raises(ValueError, match="at least 16x16"):
        SmallFrameCNN(image(3, 8))
    with pytest.raises(ValueError, match="share one H x W"):
        SmallFrameCNN(spaces.Dict({"observation": image(3, 32), "desired_goal": image(3, 16)}))
    with pytest.raises(ValueError, match="image Box or a Dict"):
        SmallFrameCNN(spaces.Box(-1, 1, (4,), np.float32))


def test_ppo_trains_on_a_32px_task_with_the_small_frame_extractor():
    env = gym.make(TASK, size=32)  # NatureCNN (SB3's CnnPolicy default) cannot take 32x32 frames
    model = PPO("CnnPolicy", env, **TINY_PPO)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)
    assert model.num_timesteps == 32
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


@pytest.mark.parametrize("env_id", ["worldvid/PointReach-v0", "worldvid/Push-v0", "worldvid/Reacher-v0",
                                    "worldvid/PushT-v0"])
def test_sb3_runs_unchanged_on_every_task_with_goal_conditioned_observations(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, size=16, goal_conditioned=True, terminate_on_success=True)
    sb3_check_env(env.unwrapped, warn=False, skip_render_check=True)
    model = PPO("MultiInputPolicy", env, **TINY_PPO)
    model.learn(16)
    observation, info = env.reset(seed=1)
    assert set(observation) == {"observation", "desired_goal"} and "is_success" in info
    action, _ = model.predict(observation, deterministic=True)
    assert env.step(action)[4]["is_success"] in (True, False)


def test_dream_vector_env_is_one_sb3_vec_env_with_terminal_observations(tiny_run):
    vector = gym.make_vec(DREAM_ID, num_envs=3, vectorization_mode="vector_entry_point", model=tiny_run,
                          max_episode_steps=4, autoreset_mode="SameStep")
    venv = sb3_vec_env(vector)
    assert venv.num_envs == 3 and venv.observation_space == vector.single_observation_space
    venv.seed(7)
    first = venv.reset()
    assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
    for step in range(4):
        obs, rewards, dones, infos = venv.step(np.zeros((3, 2), np.float32))
        assert rewards.dtype == np.float32 and len(infos) == 3
    assert dones.all()  # the time limit ended every dream at step 4 ...
    for info in infos:  # ... SB3 finds the ended episode's last frame and the truncation flag
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == (16, 16, 3)
    model = PPO("CnnPolicy", venv, **TINY_PPO)
    model.learn(48)  # one model call per step for all three dreams
    assert model.num_timesteps == 48
    venv.close()


def test_a_vector_env_that_resets_on_the_next_step_is_refused_in_one_line(tiny_run):
    vector = gym.make_vec(DREAM_ID, num_envs=2, vectorization_mode="vector_entry_point", model=tiny_run)
    with pytest.raises(ValueError, match="autoreset_mode=SameStep"):
        sb3_vec_env(vector)
    vector.close()


def test_imagination_rl_trains_in_the_dream_and_scores_in_reality(tiny_run, tmp_path):
    from worldvid.experiments.imagination_rl import ImaginationRLConfig, run

    config = ImaginationRLConfig(model=tiny_run, cost="keypoint", timesteps=32, num_envs=2, n_steps=16,
                                 batch_size=16, n_epochs=1, features_dim=16, eval_episodes=2,
                                 agents=("dream", "real", "random"))
    results = run(config, tmp_path / "out")
    for agent in ("dream", "real", "random"):
        row = results["rows"][agent]
        assert row["episodes"] == 2 and 0 <= row["successes"] <= 2 and row["seeds"] == [5000, 5001]
    assert (tmp_path / "out" / "dream.zip").is_file() and (tmp_path / "out" / "real.zip").is_file()
    assert "| dream |" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(ValueError, match="unknown agent"):
        run(ImaginationRLConfig(model=tiny_run, agents=("teleport",)), tmp_path / "bad")

"""Contracts of worldvid/Dream-v0, the learned simulator: check_env, seeding, vector == single envs, action
validation, pickling. A tiny untrained model (16x16, one sampler step) and a tiny store keep it fast."""

from __future__ import annotations

import functools
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from worldvid.envs import DREAM_ID
from worldvid.envs.dream import DreamEnv, DreamVectorEnv, imagine_next
from worldvid.model import WorldModel, WorldModelConfig

TASK = "worldvid/PointReach-v0"


def tiny_config(**changes) -> WorldModelConfig:
    return WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id=TASK, num_steps=1).replace(**changes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model saved as a run folder (RUN/model) and a 2-episode store of its task."""
    from worldvid.data.collect import collect

    root = tmp_path_factory.mktemp("dream")
    torch.manual_seed(0)
    model = WorldModel(tiny_config())
    with torch.no_grad():  # an untrained net's zero-initialised output layers would imagine near-constant frames
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "run" / "model")
    collect(TASK, 2, root / "store", size=16, progress=False, episodes_per_shard=2)
    return {"run": str(root / "run"), "model": str(root / "run" / "model"), "store": str(root / "store")}


@functools.cache
def kernels_batch_invariant(model_dir: str) -> bool:
    """Whether this machine's kernels (at the model's default precision) compute a row alone exactly as in a batch.

    Vector == single envs holds exactly only then: the noise is per env by construction, but e.g. fp32 MKL GEMMs
    take another code path for batches < 4, and on CPUs without native bf16 the default precision is fp32.
    """
    model = WorldModel.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    context = torch.rand(3, 4, 3, 16, 16, generator=g) * 2 - 1
    actions = torch.rand(3, 4, 2, generator=g) * 2 - 1
    sigma = torch.ones(3)
    with torch.inference_mode(), model.autocast_context():
        batched = model.denoiser(x, sigma, context=context, actions=actions)
        rows = [model.denoiser(x[i:i + 1], sigma[:1], context=context[i:i + 1], actions=actions[i:i + 1]) for i in range(3)]
    return torch.equal(batched, torch.cat(rows))


def expect_equal(differences: list[str], tiny: dict) -> None:
    """Fail on differences, unless the kernels are not batch-invariant here (then xfail, saying so)."""
    if differences and not kernels_batch_invariant(tiny["model"]):
        pytest.xfail("this machine's kernels are not batch-invariant at the model's precision: " + differences[0])
    assert not differences, differences


def make(tiny: dict, **kwargs) -> gym.Env:
    return gym.make(f"worldvid:{DREAM_ID}", model=tiny["run"], data=tiny["store"], **kwargs)


def play(env: gym.Env, seed: int, actions: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, reward, *_ = env.step(a)
        frames.append(obs)
        rewards.append(reward)
    return frames, rewards


def test_check_env_with_store(tiny: dict) -> None:
    env = make(tiny, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space == gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert env.spec.max_episode_steps == 50
    assert info["goal_frame"].shape == (16, 16, 3) and info["origin"]["source"] == "store"
    obs2, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert obs2.dtype == np.uint8 and obs2.shape == (16, 16, 3)
    assert isinstance(reward, float) and reward <= 0 and not terminated and not truncated
    assert np.array_equal(env.render(), obs2)
    assert info["goal_frame"].shape == (16, 16, 3)
    env.close()


def test_check_env_from_real_task_and_time_limit(tiny: dict) -> None:
    env = gym.make(f"worldvid:{DREAM_ID}", model=tiny["model"], cost="blur", max_episode_steps=2)
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=3)
    assert info["origin"]["source"] == "env" and info["goal_frame"].shape == (16, 16, 3)
    assert not env.step(env.action_space.sample())[3]
    assert env.step(env.action_space.sample())[3]  # truncated by the registered TimeLimit
    env.close()


def test_reset_is_reproducible(tiny: dict) -> None:
    env = make(tiny)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32)
    frames_a, rewards_a = play(env, 7, actions)
    frames_b, rewards_b = play(env, 7, actions)
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b)) and rewards_a == rewards_b
    # unseeded resets continue the seeded stream, so they are reproducible too
    env.reset(seed=11)
    next_a = env.reset()[0]
    env.reset(seed=11)
    assert np.array_equal(env.reset()[0], next_a)
    env.close()


def test_imagine_next_matches_predict_next(tiny: dict) -> None:
    """The per-row-noise sampler is predict_next, row by row, with each row's own generator."""
    model = WorldModel.from_pretrained(tiny["model"])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (3, 4, 2)).astype(np.float32)
    batched = imagine_next(model, frames, actions, [torch.Generator().manual_seed(s) for s in range(3)])
    for i in range(3):
        single = model.predict_next(frames[i:i + 1], actions[i:i + 1], generator=torch.Generator().manual_seed(i))
        assert np.array_equal(batched[i], single[0].numpy())


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_equals_single_envs(tiny: dict, mode: AutoresetMode) -> None:
    """The batched vector env gives exactly what gymnasium's SyncVectorEnv of single DreamEnvs gives, across autoresets."""
    kwargs = {"model": tiny["run"], "data": tiny["store"], "max_episode_steps": 3}
    vector = gym.make_vec(f"worldvid:{DREAM_ID}", num_envs=3, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs)
    sync = gym.make_vec(f"worldvid:{DREAM_ID}", num_envs=3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs)
    assert isinstance(vector.unwrapped, DreamVectorEnv) and vector.metadata["autoreset_mode"] == mode
    assert vector.observation_space == sync.observation_space and vector.action_space == sync.action_space
    obs_v, info_v = vector.reset(seed=4)
    obs_s, info_s = sync.reset(seed=4)
    assert np.array_equal(obs_v, obs_s) and np.array_equal(info_v["goal_frame"], info_s["goal_frame"])
    rng = np.random.default_rng(1)
    differences = []
    for step in range(7):
        actions = rng.uniform(-1.2, 1.2, (3, 2)).astype(np.float32)  # some out of range: both clip
        out_v, out_s = vector.step(actions), sync.step(actions)
        assert np.array_equal(out_v[2], out_s[2]) and np.array_equal(out_v[3], out_s[3])  # flags: no model involved
        for name, a, b in zip(("observations", "rewards"), out_v[:2], out_s[:2]):
            if not np.array_equal(a, b):
                differences.append(f"{name} differ at step {step}")
        if mode == AutoresetMode.SAME_STEP and "final_obs" in out_s[4]:
            assert np.array_equal(out_v[4]["_final_obs"], out_s[4]["_final_obs"])
            for a, b in zip(out_v[4]["final_obs"], out_s[4]["final_obs"]):
                if not ((a is None and b is None) or np.array_equal(a, b)):
                    differences.append(f"final_obs differ at step {step}")
    assert vector.render() is None
    expect_equal(differences, tiny)
    vector.close()
    sync.close()


def test_vector_equals_separately_made_single_envs(tiny: dict) -> None:
    """Sub-env i of a vector reset with seed s is DreamEnv reset with seed s + i, stepped alone (batch of 1)."""
    n, steps = 4, 4
    vector = DreamVectorEnv(num_envs=n, model=tiny["run"], data=tiny["store"], render_mode="rgb_array")
    actions = np.random.default_rng(2).uniform(-1, 1, (steps, n, 2)).astype(np.float32)
    frames = [vector.reset(seed=10)[0]] + [vector.step(a)[0] for a in actions]
    assert np.array_equal(np.stack(vector.render()), frames[-1])
    differences = []
    for i in range(n):
        single, _ = play(make(tiny), 10 + i, actions[:, i])
        assert np.array_equal(frames[0][i], single[0])  # the start: no model involved
        differences += [f"sub-env {i} differs at step {t}" for t, (v, s) in enumerate(zip(frames, single)) if not np.array_equal(v[i], s)]
    expect_equal(differences, tiny)


def test_vector_reset_mask_and_errors(tiny: dict) -> None:
    vector = DreamVectorEnv(num_envs=2, model=tiny["model"], data=tiny["store"], autoreset_mode="Disabled", max_episode_steps=1)
    with pytest.raises(gym.error.ResetNeeded):
        vector.step(np.zeros((2, 2), np.float32))
    first, _ = vector.reset(seed=0)
    assert vector.step(np.zeros((2, 2), np.float32))[3].all()
    with pytest.raises(RuntimeError, match="reset_mask"):
        vector.step(np.zeros((2, 2), np.float32))
    obs, info = vector.reset(seed=[None, 1], options={"reset_mask": np.array([False, True])})
    assert info["_goal_frame"].tolist() == [False, True]
    with pytest.raises(ValueError, match="shape"):
        vector.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="seeds"):
        vector.reset(seed=[1, 2, 3])


@pytest.mark.parametrize(
    "action, error, match",
    [
        (np.zeros(3, np.float32), ValueError, "shape"),
        (np.zeros((1, 2), np.float32), ValueError, "shape"),
        (np.array([np.nan, 0.0]), ValueError, "finite"),
        (np.array([np.inf, 0.0]), ValueError, "finite"),
        (np.array(["a", "b"]), TypeError, "numeric"),
        ([None, 0.0], TypeError, "numeric"),
        (np.array([True, False]), TypeError, "numeric"),
    ],
)
def test_bad_actions_raise(tiny: dict, action, error, match) -> None:
    env = make(tiny).unwrapped
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_out_of_range_actions_are_clipped(tiny: dict) -> None:
    env = make(tiny)
    big, _ = play(env, 5, np.array([[3.0, -7.0]]))
    clipped, _ = play(env, 5, np.array([[1.0, -1.0]], np.float32))
    assert np.array_equal(big[-1], clipped[-1])
    int_action, _ = play(env, 5, np.array([[1, -1]]))  # integer actions are numbers too
    assert np.array_equal(int_action[-1], clipped[-1])


def test_pickle_round_trip(tiny: dict) -> None:
    env = make(tiny).unwrapped
    copy = pickle.loads(pickle.dumps(env))
    actions = np.full((2, 2), 0.5, np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(play(env, 1, actions)[0], play(copy, 1, actions)[0]))


def test_model_instance_and_clear_errors(tiny: dict, tmp_path) -> None:
    model = WorldModel.from_pretrained(tiny["model"])
    env = DreamEnv(model=model, data=tiny["store"], cost=None)
    env.reset(seed=0)
    assert env.step(np.zeros(2))[1] == 0.0  # cost=None: no reward
    WorldModel(tiny_config(env_id=None)).save_pretrained(tmp_path / "anon")
    with pytest.raises(ValueError, match="env_id"):
        DreamEnv(model=tmp_path / "anon")
    WorldModel(tiny_config(action_dim=3)).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="action_dim"):
        DreamEnv(model=tmp_path / "wide", data=tiny["store"])
    with pytest.raises(ValueError, match="not in it"):
        DreamEnv(model=model, data=tiny["store"], episodes=[99])
    with pytest.raises(ValueError, match="cost"):
        DreamEnv(model=model, data=tiny["store"], cost="nope")


def test_the_reward_can_be_a_learned_goal_distance(tiny: dict, tmp_path) -> None:
    from worldvid.costs import make_cost
    from worldvid.goal_distance import GoalDistance, GoalDistanceConfig

    torch.manual_seed(0)
    GoalDistance(GoalDistanceConfig(frame_size=16, env_id=TASK, widths=(4, 8, 8), hidden=8, embed_dim=4)).save_pretrained(
        tmp_path / "cost" / "model")
    env = DreamEnv(model=tiny["model"], data=tiny["store"], cost="learned", cost_model=tmp_path / "cost")
    _, info = env.reset(seed=0)
    frame, reward, *_ = env.step(np.zeros(2))
    distance = make_cost("learned", TASK, cost_model=str(tmp_path / "cost"))(frame, info["goal_frame"])
    assert reward == pytest.approx(-float(distance)) and reward <= 0.0
    with pytest.raises(ValueError, match="--cost-model"):
        DreamEnv(model=tiny["model"], data=tiny["store"], cost="learned")

"""Collection: policies, Ray-parallel collection, seed invariance, kill-and-resume, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from worldvid.data.collect import collect, collect_episode
from worldvid.envs.factory import make_pixel_env
from worldvid.data.policies import CorrelatedNoisePolicy, make_policy
from worldvid.data.store import EpisodeStore, StoreMismatchError

POINT = "worldvid/PointReach-v0"


def assert_same_stores(a: EpisodeStore, b: EpisodeStore) -> None:
    assert a.episode_ids == b.episode_ids
    for i in a.episode_ids:
        assert a.read_episode(i).equals(b.read_episode(i)), f"episode {i} differs"


def test_correlated_noise_is_smooth_and_bounded():
    env = make_pixel_env(POINT, 16)
    policy = CorrelatedNoisePolicy(beta=0.8)
    policy.reset(env, np.random.default_rng(0))
    actions = np.stack([policy(None) for _ in range(2000)])
    assert actions.dtype == np.float32 and actions.min() >= -1 and actions.max() <= 1
    lag1 = np.corrcoef(actions[:-1, 0], actions[1:, 0])[0, 1]
    assert 0.6 < lag1 < 0.95, lag1  # white noise would give ~0
    assert actions.std() > 0.4  # it still explores the whole range


def test_policies_cover_wandering_and_reaching():
    env = make_pixel_env(POINT, 16)
    reached = {name: [bool(collect_episode(env, make_policy(name), seed).success.any()) for seed in range(8)] for name in ("random", "scripted", "mixed")}
    assert sum(reached["scripted"]) >= 7
    assert sum(reached["random"]) <= 4
    assert 1 <= sum(reached["mixed"])


def test_subgoals_policy_keeps_the_push_block_moving():
    # mixed reaches the goal once and idles; subgoals keeps pushing toward new sub-goals, with random bursts
    env = make_pixel_env("worldvid/Push-v0", 16)
    travel = {}
    for name in ("mixed", "subgoals"):
        distance = 0.0
        for seed in range(10):
            policy = make_policy(name)
            env.reset(seed=seed)
            policy.reset(env, np.random.default_rng(seed))
            block = env.unwrapped.data.qpos[2:4].copy()
            for _ in range(100):
                action = policy(None)
                assert action.dtype == np.float32 and np.all(np.abs(action) <= 1)
                env.step(action)
                distance += np.linalg.norm(env.unwrapped.data.qpos[2:4] - block)
                block = env.unwrapped.data.qpos[2:4].copy()
        travel[name] = distance
    assert travel["subgoals"] > 1.3 * travel["mixed"], travel  # measured 1.6x here (2x over 40 seeds)


def test_same_data_for_one_and_two_workers(tmp_path, ray_session):
    one = collect(POINT, 4, tmp_path / "w1", workers=1, size=16, seed=3, episodes_per_shard=1, progress=False)
    two = collect(POINT, 4, tmp_path / "w2", workers=2, size=16, seed=3, episodes_per_shard=1, progress=False)
    assert len(one.store) == len(two.store) == 4
    assert_same_stores(one.store, two.store)
    assert one.store.read_episode(2).seed == 5


def test_rerun_completes_and_reuses(tmp_path):
    first = collect(POINT, 3, tmp_path, size=16, episodes_per_shard=2, progress=False)
    assert first.new_episodes == 3
    mtime = (tmp_path / "shard_00000.h5").stat().st_mtime_ns
    second = collect(POINT, 5, tmp_path, size=16, episodes_per_shard=2, progress=False)
    assert second.new_episodes == 2 + 1  # shard 1 grows from 1 to 2 episodes, shard 2 is new
    assert (tmp_path / "shard_00000.h5").stat().st_mtime_ns == mtime
    assert collect(POINT, 5, tmp_path, size=16, episodes_per_shard=2, progress=False).new_episodes == 0
    reference = collect(POINT, 5, tmp_path / "ref", size=16, episodes_per_shard=2, progress=False)
    assert_same_stores(EpisodeStore(tmp_path), reference.store)


def test_collect_killed_mid_run_resumes_to_identical_data(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "worldvid.cli", "collect", "--env", POINT, "--episodes", "30", "--size", "16",
            "--episodes-per-shard", "1", "--policy", "random", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        manifest = out / "manifest.json"
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "collection finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = EpisodeStore(out)
    assert 2 <= len(partial) < 30
    partial.verify()  # every shard the manifest lists is whole
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reference = collect(POINT, 30, tmp_path / "ref", size=16, episodes_per_shard=1, policy="random", progress=False)
    assert_same_stores(EpisodeStore(out), reference.store)


def test_any_rgb_array_gymnasium_env_can_be_collected(tmp_path):
    report = collect("Reacher-v5", 2, tmp_path, size=16, policy="random", progress=False)
    ep = report.store.read_episode(1)
    assert ep.frames.shape == (51, 16, 16, 3) and ep.goal_frame is None and ep.env_id == "Reacher-v5"
    assert ep.frames.std() > 0  # real rendered pixels, not a blank buffer


class _NoPixels(gym.Env):
    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (2,))


def test_bad_environments_get_clear_errors(tmp_path):
    gym.register("test/NoPixels-v0", entry_point=_NoPixels, max_episode_steps=5)
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v0'"):
        collect("NoSuchEnv-v0", 1, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="cannot render rgb_array"):
        collect("test/NoPixels-v0", 1, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="continuous \\(Box\\) action space"):
        collect("CartPole-v1", 1, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="unknown policy"):
        collect(POINT, 1, tmp_path / "d", policy="greedy", progress=False)
    collect(POINT, 1, tmp_path / "e", size=16, progress=False)
    with pytest.raises(StoreMismatchError, match="frame_shape"):
        collect(POINT, 1, tmp_path / "e", size=32, progress=False)


def test_cli_collect_and_envs(tmp_path):
    run = subprocess.run([sys.executable, "-m", "worldvid.cli", "envs"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and all(t in run.stdout for t in (POINT, "worldvid/Push-v0", "worldvid/Reacher-v0"))
    run = subprocess.run([sys.executable, "-m", "worldvid.cli", "collect", "--env", "worldvid/Push-v0", "--episodes", "2",
                          "--size", "16", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "bytes_per_frame" in run.stdout and "frames_per_second" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "worldvid.cli", "collect", "--env", "Nope-v9", "--episodes", "1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown environment id 'Nope-v9'" in bad.stderr and "Traceback" not in bad.stderr

"""Collecting episodes: the rollout loop, and Ray-parallel collection into an episode store."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldvid.data.episode import Episode
from worldvid.data.policies import CollectionPolicy, make_policy, policy_for_env
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.envs.factory import canonical_env_id, make_pixel_env
from worldvid.parallel import bounded_queue, explain, init_ray, reworded


def collect_episode(env: gym.Env, policy: CollectionPolicy, seed: int, max_steps: int | None = None) -> Episode:
    """Run one episode from ``env.reset(seed=seed)`` until termination, truncation or ``max_steps``.

    The policy's RNG is derived from the seed, so the episode is a function of (env, policy, seed).
    """
    observation, info = env.reset(seed=seed)
    policy.reset(env, np.random.default_rng([seed, 0x5EED]))
    goal = info.get("goal_frame", getattr(env.unwrapped, "goal_frame", None))
    limit = max_steps or (env.spec.max_episode_steps if env.spec else None)
    if limit is None:
        raise ValueError("the env has no time limit; pass max_steps")
    frames, actions, rewards, terms, truncs, successes = [observation], [], [], [], [], []
    for _ in range(limit):
        action = np.asarray(policy(observation), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        frames.append(observation)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        successes.append(info.get("success"))
        if terminated or truncated:
            break
    has_success = all(s is not None for s in successes)
    return Episode(
        frames=np.stack(frames).astype(np.uint8),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terms, dtype=bool),
        truncated=np.asarray(truncs, dtype=bool),
        goal_frame=None if goal is None else np.asarray(goal, dtype=np.uint8),
        env_id=canonical_env_id(env.spec.id if env.spec else str(env)),
        seed=int(seed),
        policy=policy.name,
        success=np.asarray(successes, dtype=bool) if has_success else None,
    )


def collect_shard(env_id: str, size: int, env_kwargs: dict[str, Any], policy: str, seeds: list[int]) -> list[Episode]:
    """Collect one episode per seed in a fresh env (the unit of work of one worker)."""
    env = make_pixel_env(env_id, size, **env_kwargs)
    try:
        return [collect_episode(env, make_policy(policy), seed) for seed in seeds]
    finally:
        env.close()


@dataclass
class CollectReport:
    """What one ``collect`` call did: the store, how much it collected now, and how fast.

    ``repaired``: one line per shard found broken on a rerun (set aside and collected again).
    """

    store: EpisodeStore
    new_episodes: int
    new_frames: int
    seconds: float
    repaired: list[str] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.new_frames / self.seconds if self.seconds > 0 else float("nan")


def store_spec(env_id: str, size: int, policy: str, seed: int, episodes_per_shard: int = 10,
               env_kwargs: dict[str, Any] | None = None) -> StoreSpec:
    """The ``StoreSpec`` of episodes of ``env_id`` at ``size`` (frame shape and action size read from a probe env)."""
    env_kwargs = dict(env_kwargs or {})
    probe = make_pixel_env(env_id, size, **env_kwargs)
    try:
        return StoreSpec(env_id=canonical_env_id(probe.spec.id if probe.spec else env_id),
                         frame_shape=probe.observation_space.shape, action_dim=int(np.prod(probe.action_space.shape)),
                         policy=policy, seed=seed, episodes_per_shard=episodes_per_shard, env_kwargs=env_kwargs)
    finally:
        probe.close()


def default_policy(env_id: str, size: int, policy: str, env_kwargs: dict[str, Any] | None = None) -> str:
    """``policy``, or "random" when it is "mixed" (the default) and ``env_id`` has no scripted expert
    (``worldvid.data.policies.policy_for_env``); the fallback prints one note."""
    probe = make_pixel_env(env_id, size, **dict(env_kwargs or {}))
    try:
        policy, note = policy_for_env(policy, probe)
    finally:
        probe.close()
    if note:
        print(note, flush=True)
    return policy


def collect(
    env_id: str,
    num_episodes: int,
    out: str | os.PathLike,
    workers: int = 1,
    policy: str = "mixed",
    size: int = 64,
    seed: int = 0,
    episodes_per_shard: int = 10,
    max_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    shard_timeout_s: float = 1800.0,
    address: str | None = None,
) -> CollectReport:
    """Collect ``num_episodes`` episodes of ``env_id`` into the store at ``out``; episode i uses seed ``seed + i``.

    With ``workers > 1`` shards are collected by Ray tasks (at most ``workers`` at once) on the Ray cluster at
    ``address`` (default: ``RAY_ADDRESS`` if set, else Ray started locally: ``worldvid.parallel.init_ray``); the
    episodes come back to this process, which alone writes the store, so a cluster's nodes need worldvid
    installed but no shared storage.
    The default policy, "mixed", is "random" on an env without a scripted expert (one printed note).
    Shards are assigned by episode index, so the data is identical whatever ``workers`` is. The store's write
    lock is held throughout: a second writer into the same folder gets ``FolderLockedError``. Re-running into
    the same folder keeps the finished shards that verify (size and checksum, or a full read for shards
    written before checksums were recorded), sets aside broken ones with a warning line on stderr, and
    collects only what is missing, so the store ends up identical to an uninterrupted collect; a folder
    holding data of another configuration raises ``StoreMismatchError`` and is left untouched.
    ``max_steps`` ends episodes early (Gymnasium's ``max_episode_steps``); it is kept in the store's
    ``env_kwargs``, so every consumer that makes the env from the store (evaluate, export) makes the same one.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    env_kwargs = dict(env_kwargs or {}) | ({"max_episode_steps": max_steps} if max_steps else {})
    make_policy(policy)  # fail on a bad name before any work starts
    policy = default_policy(env_id, size, policy, env_kwargs)
    spec = store_spec(env_id, size, policy, seed, episodes_per_shard, env_kwargs)
    num_shards = -(-num_episodes // episodes_per_shard)
    start = time.perf_counter()
    with EpisodeStore.create(Path(out), spec) as store:
        repaired = store.discard_broken(range(num_shards))
        for line in repaired:
            print(f"warning: broken shard {line}; collecting its episodes again", file=sys.stderr, flush=True)
        todo = [j for j in range(num_shards) if not store.has_shard(j, num_episodes)]
        jobs = {j: [seed + i for i in spec.episodes_of(j, num_episodes)] for j in todo}
        bar = tqdm(total=sum(map(len, jobs.values())), desc=f"collect {spec.env_id}", unit="ep", disable=not progress)
        new_frames = 0

        def finish(index: int, episodes: list[Episode]) -> None:
            nonlocal new_frames
            store.write_shard(index, episodes)
            new_frames += sum(ep.num_steps + 1 for ep in episodes)
            bar.update(len(episodes))

        args = (env_id, size, env_kwargs, policy)
        if workers == 1 or len(jobs) <= 1:
            for index, seeds in jobs.items():
                try:
                    episodes = collect_shard(*args, seeds)
                except Exception as err:  # the same one line as a Ray worker's failure
                    raise reworded(err, f"shard {index} failed: {explain(err)[1]}", index) from err
                finish(index, episodes)
        else:
            _collect_with_ray(jobs, args, workers, finish, shard_timeout_s, address)
        bar.close()
    return CollectReport(store, sum(map(len, jobs.values())), new_frames, time.perf_counter() - start, repaired)


def _collect_with_ray(jobs: dict[int, list[int]], args: tuple, workers: int, finish, timeout_s: float,
                      address: str | None = None) -> None:
    import ray

    init_ray(address, num_cpus=workers)
    remote = ray.remote(num_cpus=1, max_retries=3)(collect_shard)
    bounded_queue(jobs, lambda slot, index: remote.remote(*args, jobs[index]), finish, slots=workers,
                  timeout_s=timeout_s, what="shard", max_retries=2)

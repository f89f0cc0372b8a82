"""The episode stores a training run reads: opened and checked before anything is written, and the model
configuration they call for (single-task, or multi-task when they hold several tasks)."""

from __future__ import annotations

import os
from pathlib import Path

from worldvid.data.store import EpisodeStore
from worldvid.model import WorldModelConfig


def open_stores(data_dirs: list[str | os.PathLike]) -> list[EpisodeStore]:
    """The episode stores to train on; ValueError when their frame shapes differ, or when stores of one task
    differ in action size. Stores of several tasks make a multi-task model (``task_config``)."""
    if not data_dirs:
        raise ValueError("need at least one episode store to train on")
    stores = [EpisodeStore(d) for d in data_dirs]
    first = stores[0]
    for store in stores[1:]:
        spec = store.spec
        if spec.frame_shape != first.spec.frame_shape:
            raise ValueError(f"{store.root} holds frames {list(spec.frame_shape)}, {first.root} "
                             f"{list(first.spec.frame_shape)}: one model trains at one frame size")
    action_dims: dict[str, tuple[int, Path]] = {}
    for store in stores:
        dim, root = action_dims.setdefault(store.spec.env_id, (store.spec.action_dim, store.root))
        if dim != store.spec.action_dim:
            raise ValueError(f"{store.root} holds {store.spec.env_id} actions of size {store.spec.action_dim}, "
                             f"{root} of size {dim}")
    return stores


def task_config(stores: list[EpisodeStore]) -> WorldModelConfig:
    """The default model for these stores: single-task, or multi-task (its ``tasks`` in first-seen order, actions
    as wide as the widest task's) when they hold several tasks."""
    tasks = list(dict.fromkeys(store.spec.env_id for store in stores))
    spec = stores[0].spec
    if len(tasks) == 1:
        return WorldModelConfig(action_dim=spec.action_dim, frame_size=spec.frame_shape[0], env_id=spec.env_id)
    return WorldModelConfig(action_dim=max(store.spec.action_dim for store in stores),
                            frame_size=spec.frame_shape[0], tasks=tuple(tasks))


def check_readable(stores: list[EpisodeStore]) -> None:
    """Read one frame and action of the first episode of every shard of every store: a missing, truncated or
    garbage shard fails here (CorruptShardError naming the file), before anything is written."""
    for store in stores:
        first_of_shard: dict[int, int] = {}
        for episode in store.episode_ids:
            first_of_shard.setdefault(store.spec.shard_of(episode), episode)
        for episode in first_of_shard.values():
            store.read_frames(episode, 0, 1)
            store.read_actions(episode, 0, 1)
        store.close()  # DataLoader workers open their own handles

"""Frame-window dataset: K context frames + K actions -> the next frame (and, unrolled, the R-1 after it)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from worldvid.data.store import EpisodeStore
from worldvid.windows import context_window


class FrameWindowDataset(Dataset):
    """Every window of an episode store, read lazily.

    Item ``i`` is one (episode, t) pair, 0 <= t < T, and holds (``worldvid.windows``' convention):

    - ``context``: uint8 [K, H, W, 3], frames f[t-K+1..t];
    - ``context_actions``: float32 [K, A], actions a[t-K+1..t] (a[j] is the one taken from frame f[j]),
      zero-padded to ``action_dim`` when that is wider than the store's actions (a multi-task model);
    - ``target``: uint8 [H, W, 3], frame f[t+1];
    - with ``unroll`` R > 1 also ``future_frames`` uint8 [R-1, H, W, 3] = f[t+2..t+R] and ``future_actions``
      float32 [R-1, A] = a[t+1..t+R-1], the frames a model imagining R steps from the window must reach and the
      actions that lead there (``WorldModel.loss``'s unrolled form). Only windows with t + R <= T exist then,
      so an episode of T steps gives T - R + 1 windows (T with R = 1).

    Before an episode's start the first frame is repeated and the actions are zero. Only an index of
    episode lengths is held in memory (taken from the manifest); frames are read from HDF5 on demand, with
    file handles opened lazily in each DataLoader worker process, so memory does not grow with the data.
    Shuffle with the DataLoader to draw random windows.
    """

    def __init__(self, store: EpisodeStore | str | os.PathLike, context: int = 4, episodes: Sequence[int] | None = None,
                 action_dim: int | None = None, unroll: int = 1) -> None:
        if context < 1 or unroll < 1:
            raise ValueError(f"context and unroll must be >= 1, got {context} and {unroll}")
        self.unroll = unroll
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        self.context = context
        self.action_dim = self.store.spec.action_dim if action_dim is None else action_dim
        if self.action_dim < self.store.spec.action_dim:
            raise ValueError(f"{self.store.root} has actions of size {self.store.spec.action_dim}, "
                             f"more than action_dim={self.action_dim}")
        self.episodes = np.asarray(self.store.episode_ids if episodes is None else list(episodes), dtype=np.int64)
        if self.episodes.size == 0:
            raise ValueError(f"no episodes to draw windows from in {self.store.root}")
        lengths = np.array([self.store.episode_length(int(e)) for e in self.episodes], dtype=np.int64)
        lengths = np.maximum(lengths - (unroll - 1), 0)  # windows whose R targets all lie inside the episode
        if lengths.sum() == 0:
            raise ValueError(f"no episode of {self.store.root} is longer than unroll={unroll} steps")
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(episode id, t) of window ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        row = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return int(self.episodes[row]), int(index - self._offsets[row])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        episode, t = self.locate(index)
        k = self.context
        start = max(0, t - k + 1)  # read only what the window needs; padding happens only when start is 0
        r = self.unroll
        frames = self.store.read_frames(episode, start, t + 1 + r)  # f[start..t] and the targets f[t+1..t+R]
        actions = self.store.read_actions(episode, start, t + r)
        context, context_actions = context_window(frames, actions, t - start, k)
        item = {"context": context, "context_actions": self._padded(context_actions),
                "target": frames[t + 1 - start]}
        if r > 1:
            item["future_frames"] = frames[t + 2 - start:]
            item["future_actions"] = self._padded(actions[t + 1 - start:])
        return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in item.items()}

    def _padded(self, actions: np.ndarray) -> np.ndarray:
        """float32 [N, A'] actions zero-padded to [N, action_dim] (a multi-task model's shorter task)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape[-1] == self.action_dim:
            return actions
        return np.pad(actions, ((0, 0), (0, self.action_dim - actions.shape[-1])))


def split_episodes(store: EpisodeStore, held_out_fraction: float = 0.1, min_held_out: int = 1) -> tuple[list[int], list[int]]:
    """Split a store's episodes into (train, held-out) by index: the last ones are held out.

    Deterministic, so training and evaluation agree on which episodes the model never saw.
    """
    ids = store.episode_ids
    if len(ids) < 2:
        raise ValueError(f"need at least 2 episodes to hold some out, the store has {len(ids)}")
    held = min(len(ids) - 1, max(min_held_out, int(round(len(ids) * held_out_fraction))))
    return ids[:-held], ids[-held:]

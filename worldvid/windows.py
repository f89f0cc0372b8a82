"""The time convention: which K frames and which K actions condition the next frame.

An episode has frames f[0..T] and actions a[0..T-1]; a[t] is the action taken from frame f[t], so it leads
into f[t+1]. At time t the world model sees the K most recent frames and predicts f[t+1]:

- ``context_frames``  uint8 [K, H, W, 3] = f[t-K+1..t], oldest first (the last is the current frame);
- ``context_actions`` float32 [K, A] = a[t-K+1..t], the action taken from each context frame (the last is
  the action taken now): what the denoiser is conditioned on (``WorldModel.loss`` / ``predict_next``);
- ``past_actions``    float32 [K, A] = a[t-K..t-1], the action that led into each context frame: what a
  planner or a dream has executed before deciding a[t] (``WorldModel.rollout``, ``History``).

Before an episode's start the first frame is repeated and the actions are zero, in training and at every
use of a model. This module is the only place that pads or slices windows; the dataset, the open-loop
evaluation, the dream env and the planners' history all call it.
"""

from __future__ import annotations

import numpy as np


def _indices(first: int, count: int) -> np.ndarray:
    return np.arange(first, first + count)


def frames_at(frames: np.ndarray, first: int, count: int) -> np.ndarray:
    """f[first..first+count-1] of an episode's frames [T+1, H, W, 3]; steps before 0 repeat f[0]."""
    return np.asarray(frames)[np.maximum(_indices(first, count), 0)]


def actions_at(actions: np.ndarray, first: int, count: int) -> np.ndarray:
    """a[first..first+count-1] of an episode's actions float [T, A] as float32; steps before 0 are zeros."""
    actions = np.asarray(actions, dtype=np.float32)
    index = _indices(first, count)
    out = actions[np.maximum(index, 0)] if len(actions) else np.zeros((count, *actions.shape[1:]), np.float32)
    out[index < 0] = 0.0
    return out


def context_window(frames: np.ndarray, actions: np.ndarray, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(context_frames f[t-K+1..t] uint8 [K, H, W, 3], context_actions a[t-K+1..t] float32 [K, A]): the
    window that conditions f[t+1] (a training example's input)."""
    return frames_at(frames, t - k + 1, k), actions_at(actions, t - k + 1, k)


def past_window(frames: np.ndarray, actions: np.ndarray, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(context_frames f[t-K+1..t] uint8 [K, H, W, 3], past_actions a[t-K..t-1] float32 [K, A]): what has
    happened up to time t, before a[t] is chosen (a rollout's or a planner's starting point)."""
    return frames_at(frames, t - k + 1, k), actions_at(actions, t - k, k)


def start_window(frame: np.ndarray, k: int, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(context_frames uint8 [K, H, W, 3], past_actions float32 [K, A]) at t = 0: the first frame repeated
    and zero actions, as in training."""
    return past_window(np.asarray(frame, dtype=np.uint8)[None], np.zeros((0, action_dim), np.float32), 0, k)


def with_action(past_actions: np.ndarray, action: np.ndarray) -> np.ndarray:
    """context_actions a[t-K+1..t] float32 [..., K, A] from past_actions a[t-K..t-1] [..., K, A] and the
    action a[t] taken now [..., A] (a[t-K] drops out of the window)."""
    past = np.asarray(past_actions, dtype=np.float32)
    return np.concatenate([past[..., 1:, :], np.asarray(action, dtype=np.float32)[..., None, :]], axis=-2)


def advance(context_frames: np.ndarray, past_actions: np.ndarray, action: np.ndarray,
            frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(context_frames, past_actions) at t+1, after taking ``action`` (a[t], float [A]) from f[t] and seeing
    ``frame`` (f[t+1], uint8 [H, W, 3])."""
    frames = np.concatenate([context_frames[1:], np.asarray(frame, dtype=np.uint8)[None]])
    return frames, with_action(past_actions, action)

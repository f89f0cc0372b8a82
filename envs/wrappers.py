"""Wrappers that give any rgb_array-rendering Gymnasium env worldvid's pixel interface."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image


class PixelObservation(gym.ObservationWrapper):
    """Replace an env's observation by its rendered frame, resized to ``size x size``.

    Observations are uint8 [size, size, 3]. The wrapped env must have been made with
    ``render_mode="rgb_array"``. ``goal_frame`` is None: generic envs have no goal image.
    """

    goal_frame = None

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"PixelObservation needs render_mode='rgb_array', the env has {env.render_mode!r}")
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        """The rendered frame as uint8 [size, size, 3] (area-resized when the renderer's size differs)."""
        frame = np.asarray(self.env.render())
        if frame.ndim != 3 or frame.shape[-1] < 3:
            raise ValueError(f"render() returned {frame.shape}, expected an RGB image [H, W, 3]")
        frame = frame[..., :3]
        if frame.shape[:2] != (self.size, self.size):
            frame = np.asarray(Image.fromarray(frame.astype(np.uint8)).resize((self.size, self.size), Image.BOX))
        return np.ascontiguousarray(frame, dtype=np.uint8)  # MuJoCo's renderer flips rows: a negative stride

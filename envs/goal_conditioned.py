"""Goal-conditioned observations in Gymnasium-Robotics' shape, and ``is_success``: shared by the tasks and Dream-v0.

With ``goal_conditioned=True`` an env observes a dict ``{"observation": frame, "desired_goal": goal frame}`` (both
uint8 [H, W, 3]; the goal frame is the one ``info["goal_frame"]`` carries), so a model-free agent sees what to
reach. Every info carries ``is_success`` (the key SB3 and Gymnasium-Robotics read) beside worldvid's ``success``,
with the same value. Both are options of the env, off by default, so existing results and code paths stay as
they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

OBSERVATION_KEY = "observation"
"""Key of the current frame in a goal-conditioned observation."""
GOAL_KEY = "desired_goal"
"""Key of the goal frame in a goal-conditioned observation."""


def goal_space(frame_space: spaces.Box) -> spaces.Dict:
    """The observation space of a goal-conditioned env: ``Dict`` of two ``frame_space`` entries (uint8 [H, W, 3])."""
    if not isinstance(frame_space, spaces.Box):
        raise ValueError(f"frame_space must be a Box of frames, got {frame_space}")
    return spaces.Dict({OBSERVATION_KEY: frame_space, GOAL_KEY: frame_space})


def goal_observation(frame: np.ndarray, goal: np.ndarray) -> dict[str, np.ndarray]:
    """``{"observation": frame, "desired_goal": goal}`` from frame and goal uint8 [H, W, 3] (copies)."""
    frame, goal = np.asarray(frame), np.asarray(goal)
    if frame.shape != goal.shape:
        raise ValueError(f"the goal frame has shape {goal.shape}, the frame {frame.shape}")
    return {OBSERVATION_KEY: frame.copy(), GOAL_KEY: goal.copy()}


def success_info(success: bool) -> dict[str, bool]:
    """The info entries of success: ``{"success": s, "is_success": s}``."""
    return {"success": bool(success), "is_success": bool(success)}


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a bool; ValueError naming ``name`` for anything but True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)

"""PointReach: drive a red point mass across a walled square arena to the position shown in a goal image."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import utils

from worldvid.envs.base import PixelMujocoEnv, steer_to


class PointReachEnv(PixelMujocoEnv, utils.EzPickle):
    """A point mass (red disc, radius 0.07) in the arena [-0.5, 0.5]^2 must reach a goal position.

    Observation: uint8 [size, size, 3] top-down frame. Action: float32 [2] in [-1, 1], a force along x and y
    (gear 9 against damping 10: full action is a terminal speed of 0.9 units/s, so crossing the arena takes
    about 20 steps of dt = 0.05 s). Start and goal are uniform in the arena, at least ``min_goal_distance``
    apart; the goal image shows the agent at the goal. Success: agent centre within ``success_threshold``
    (the agent's radius) of the goal.
    Further keywords: ``PixelMujocoEnv``'s options (``goal_conditioned``, ``terminate_on_success``, ``width`` /
    ``height``, ``render_size``); ``size`` None means ``DEFAULT_SIZE`` (64) unless width / height give it.
    """

    object_geoms: ClassVar[dict[str, str]] = {"agent": "agent"}
    object_colors: ClassVar[dict[str, tuple[int, int, int]]] = {"agent": (230, 26, 26)}
    goal_object: ClassVar[str] = "agent"

    def __init__(
        self,
        xml_file: str = "point_reach.xml",
        frame_skip: int = 5,
        size: int | None = None,
        success_threshold: float = 0.07,
        min_goal_distance: float = 0.3,
        spawn_half_extent: float = 0.41,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        utils.EzPickle.__init__(
            self,
            xml_file=xml_file,
            frame_skip=frame_skip,
            size=size,
            success_threshold=success_threshold,
            min_goal_distance=min_goal_distance,
            spawn_half_extent=spawn_half_extent,
            render_mode=render_mode,
            **kwargs,
        )
        self.min_goal_distance = float(min_goal_distance)
        self.spawn_half_extent = float(spawn_half_extent)
        PixelMujocoEnv.__init__(self, xml_file, frame_skip, size, success_threshold, render_mode, **kwargs)

    def _sample_task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        extent = self.spawn_half_extent
        while True:
            start, goal = self.np_random.uniform(-extent, extent, size=(2, 2))
            if np.linalg.norm(goal - start) >= self.min_goal_distance:
                return start, np.zeros(2), goal

    def scripted_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """P-controller on the true position toward ``goal`` (default the episode's): float32 [2] in [-1, 1]."""
        return steer_to(self.data.qpos[:2], self.data.qvel[:2], self._goal_or_default(goal), gain=8.0, damping=0.3)

    def sample_goal_position(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform over the spawn square: float64 [2]."""
        return rng.uniform(-self.spawn_half_extent, self.spawn_half_extent, size=2)

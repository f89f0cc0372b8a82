"""Reacher: a two-link planar arm brings its green fingertip to the position shown in a goal image."""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import utils

from worldvid.envs.base import PixelMujocoEnv


class ReacherEnv(PixelMujocoEnv, utils.EzPickle):
    """A two-link arm (grey links 0.22 and 0.20, based at the arena centre) with a green fingertip (radius 0.06).

    Observation: uint8 [size, size, 3]. Action: float32 [2] in [-1, 1], torques on the shoulder and elbow;
    the joints are damped, so full action is a terminal speed of about 4 rad/s (dt = 0.05 s). Start and goal
    are random joint angles (shoulder uniform, elbow bent by ``elbow_range`` either way), with the fingertips
    at least ``min_goal_distance`` apart; the goal image shows the arm in the goal configuration. Success:
    fingertip centre within ``success_threshold`` (0.05, a little under the fingertip radius) of the goal fingertip; the
    elbow may bend either way.
    Further keywords: ``PixelMujocoEnv``'s options (``goal_conditioned``, ``terminate_on_success``, ``width`` /
    ``height``, ``render_size``); ``size`` None means ``DEFAULT_SIZE`` (64) unless width / height give it.
    """

    object_geoms: ClassVar[dict[str, str]] = {"fingertip": "fingertip"}
    object_colors: ClassVar[dict[str, tuple[int, int, int]]] = {"fingertip": (26, 204, 26)}
    goal_object: ClassVar[str] = "fingertip"

    def __init__(
        self,
        xml_file: str = "reacher.xml",
        frame_skip: int = 5,
        size: int | None = None,
        success_threshold: float = 0.05,
        min_goal_distance: float = 0.15,
        elbow_range: tuple[float, float] = (0.2, 2.5),
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
            elbow_range=elbow_range,
            render_mode=render_mode,
            **kwargs,
        )
        self.min_goal_distance = float(min_goal_distance)
        self.elbow_range = (float(elbow_range[0]), float(elbow_range[1]))
        PixelMujocoEnv.__init__(self, xml_file, frame_skip, size, success_threshold, render_mode, **kwargs)
        self._jacobian = np.zeros((3, self.model.nv))

    def _random_angles(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.np_random if rng is None else rng
        shoulder = rng.uniform(-np.pi, np.pi)
        elbow = rng.uniform(*self.elbow_range) * rng.choice([-1.0, 1.0])
        return np.array([shoulder, elbow])

    def _fingertip_at(self, qpos: np.ndarray) -> np.ndarray:
        """World (x, y) of the fingertip for joint angles ``qpos`` [2] (kinematics on a scratch copy)."""
        scratch = mujoco.MjData(self.model)
        scratch.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, scratch)
        return scratch.geom_xpos[self._geom_ids["fingertip"], :2].copy()

    def _sample_task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        while True:
            start, goal = self._random_angles(), self._random_angles()
            if np.linalg.norm(self._fingertip_at(goal) - self._fingertip_at(start)) >= self.min_goal_distance:
                return start, np.zeros(2), goal

    def sample_goal_position(self, rng: np.random.Generator) -> np.ndarray:
        """The fingertip position of random joint angles (as goals are drawn): float64 [2]."""
        return self._fingertip_at(self._random_angles(rng))

    def scripted_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Damped least squares on the fingertip Jacobian toward ``goal`` (default the episode's): float32 [2]."""
        goal = self._goal_or_default(goal)
        mujoco.mj_jacGeom(self.model, self.data, self._jacobian, None, self._geom_ids["fingertip"])
        jacobian = self._jacobian[:2]
        error = goal - self.object_positions()["fingertip"]
        damping = 0.05**2 * np.eye(2)
        joint_velocity = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping, 6.0 * error)
        # full action holds about 4 rad/s against the joint damping; subtract a little of the current speed
        command = joint_velocity / 4.0 - 0.05 * self.data.qvel
        return np.clip(command, -1.0, 1.0).astype(np.float32)

"""Push: a red pusher disc pushes a blue square block to the position shown in a goal image."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import utils

from worldvid.envs.base import PixelMujocoEnv, steer_to


class PushEnv(PixelMujocoEnv, utils.EzPickle):
    """A pusher (red disc, radius 0.06) must push a block (blue square, half-size 0.06, translation only).

    Real contact physics; the block's damped slide joints stand in for floor friction, so it stops soon
    after contact ends. Observation: uint8 [size, size, 3]. Action: float32 [2] in [-1, 1], a force on the
    pusher (full action: terminal speed 1 unit/s alone, about 0.5 units/s while pushing; dt = 0.05 s).
    Block start and goal are uniform in [-block_extent, block_extent]^2, at least ``min_goal_distance``
    apart, so the pusher can always get behind the block; the pusher starts anywhere in the arena clear of
    the block. The goal image shows the block at its goal with the pusher resting just behind it on the
    start-to-goal line (where a straight push ends). Success: block centre within ``success_threshold``.
    Further keywords: ``PixelMujocoEnv``'s options (``goal_conditioned``, ``terminate_on_success``, ``width`` /
    ``height``, ``render_size``); ``size`` None means ``DEFAULT_SIZE`` (64) unless width / height give it.
    """

    object_geoms: ClassVar[dict[str, str]] = {"pusher": "pusher", "block": "block"}
    object_colors: ClassVar[dict[str, tuple[int, int, int]]] = {"pusher": (230, 26, 26), "block": (26, 64, 230)}
    goal_object: ClassVar[str] = "block"

    def __init__(
        self,
        xml_file: str = "push.xml",
        frame_skip: int = 10,
        size: int | None = None,
        success_threshold: float = 0.05,
        min_goal_distance: float = 0.2,
        block_extent: float = 0.25,
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
            block_extent=block_extent,
            render_mode=render_mode,
            **kwargs,
        )
        self.min_goal_distance = float(min_goal_distance)
        self.block_extent = float(block_extent)
        PixelMujocoEnv.__init__(self, xml_file, frame_skip, size, success_threshold, render_mode, **kwargs)
        self.pusher_radius = float(self.model.geom_size[self._geom_ids["pusher"], 0])
        self.block_half = float(self.model.geom_size[self._geom_ids["block"], 0])
        wall = self.model.geom("wall_px")
        self.arena_half = float(wall.pos[0] - wall.size[0])

    def contact_distance(self, direction: np.ndarray) -> float:
        """Centre distance at which the pusher, placed at -t * direction from the block, touches it.

        ``direction``: float [2], a unit vector. Solves dist(point, square) = pusher radius for t.
        """
        h, r = self.block_half, self.pusher_radius
        a, b = sorted(np.abs(np.asarray(direction, dtype=np.float64)))[::-1]  # a >= b
        face = (h + r) / a
        if face * b <= h:  # touches the face perpendicular to the dominant axis
            return float(face)
        # touches the corner: (t a - h)^2 + (t b - h)^2 = r^2, larger root
        p, q = a + b, 2.0 * h * h - r * r
        return float((h * p + np.sqrt(max(h * h * p * p - (a * a + b * b) * q, 0.0))) / (a * a + b * b))

    def _sample_task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        extent, rng = self.block_extent, self.np_random
        while True:
            block, goal = rng.uniform(-extent, extent, size=(2, 2))
            if np.linalg.norm(goal - block) >= self.min_goal_distance:
                break
        pusher_extent = self.arena_half - self.pusher_radius - 0.01
        clearance = self.block_half * np.sqrt(2.0) + self.pusher_radius + 0.03
        while True:
            pusher = rng.uniform(-pusher_extent, pusher_extent, size=2)
            if np.linalg.norm(pusher - block) >= clearance:
                break
        direction = (goal - block) / np.linalg.norm(goal - block)
        pusher_at_goal = goal - direction * (self.contact_distance(direction) + 0.005)
        qpos = np.concatenate([pusher, block])
        return qpos, np.zeros(4), np.concatenate([pusher_at_goal, goal])

    def sample_goal_position(self, rng: np.random.Generator) -> np.ndarray:
        """A block position uniform over the goal square: float64 [2]."""
        return rng.uniform(-self.block_extent, self.block_extent, size=2)

    def scripted_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Circle round the block to its far side from ``goal``, line up, then push: float32 [2] in [-1, 1].

        ``goal``: where the block should go, world (x, y) [2]; default the episode's goal.
        """
        goal = self._goal_or_default(goal)
        pusher, velocity = self.data.qpos[:2], self.data.qvel[:2]
        block = self.data.qpos[2:4]
        to_goal = goal - block
        distance = float(np.linalg.norm(to_goal))
        if distance < 0.5 * self.success_threshold:
            return steer_to(pusher, velocity, pusher, gain=0.0, damping=0.5)
        u = to_goal / distance
        contact = self.contact_distance(u)
        relative = pusher - block
        angle = np.arctan2(relative[1], relative[0])
        offset = float(np.angle(np.exp(1j * (np.arctan2(-u[1], -u[0]) - angle))))  # to the push side, wrapped
        lateral = float(abs(relative[0] * u[1] - relative[1] * u[0]))
        if abs(offset) < 0.3 and lateral < 0.3 * self.block_half and relative @ u < -contact + 0.02:
            # lined up behind the block: drive to where the pusher is when the block sits at the goal
            return steer_to(pusher, velocity, goal - u * (contact - 0.01), gain=10.0, damping=0.3)
        if abs(offset) < 0.5:
            target = block - u * (contact + 0.02)  # nearly behind: step onto the push line
        else:
            # orbit at a clearance radius, a carrot ahead in the shorter direction
            clear = self.block_half * np.sqrt(2.0) + self.pusher_radius + 0.03
            carrot = angle + np.sign(offset) * min(abs(offset), 0.7)
            target = block + clear * np.array([np.cos(carrot), np.sin(carrot)])
        limit = self.arena_half - self.pusher_radius
        return steer_to(pusher, velocity, np.clip(target, -limit, limit), gain=12.0, damping=0.3)

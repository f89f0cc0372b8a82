"""PushT: a red pusher disc pushes a blue T-shaped block (free in x, y and yaw) to the pose shown in a goal image."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import utils

from worldvid.envs import tee_geometry as tee
from worldvid.envs.base import PixelMujocoEnv, steer_to

ARENA_SIDE = 1.0
"""Inner side of the walled arena, world units (walls' inner faces at +-0.5)."""


class PushTEnv(PixelMujocoEnv, utils.EzPickle):
    """The field's Push-T task in MuJoCo: push a T (bar 0.30 x 0.08 over a 0.08 x 0.22 stem) to a goal pose.

    Observation: uint8 [size, size, 3] top-down frame. Action: float32 [2] in [-1, 1], a force on the pusher
    (radius 0.05; terminal speed 1 unit/s alone; dt = 0.05 s). The T's joints are damped and carry dry
    friction, standing in for floor friction: it stops soon after contact ends and turns when pushed off its
    centroid. Start and goal poses: centroid uniform in [-block_extent, block_extent]^2, yaw uniform; the
    pusher starts clear of the T. The goal image shows the T at its goal pose with the pusher resting below
    the stem's tip (``PixelMujocoEnv.adopt_goal`` sets any other goal state, e.g. one reached by play).

    Success as Push-T measures it: the T covers at least ``success_coverage`` of the goal T's area
    (``info["coverage"]``). Reported beside it: ``info["state_distance"]`` (centroid to goal, world units),
    ``info["angle_error"]`` (radians) and ``info["pose_success"]`` (centroid within 1/20 of the arena's side
    and yaw within 0.2 rad). Reward: the coverage.
    Further keywords: ``PixelMujocoEnv``'s options (``goal_conditioned``, ``terminate_on_success``, ``width`` /
    ``height``, ``render_size``); ``size`` None means ``DEFAULT_SIZE`` (64) unless width / height give it.
    """

    object_geoms: ClassVar[dict[str, str]] = {"pusher": "pusher", "block": "tee_bar"}
    object_colors: ClassVar[dict[str, tuple[int, int, int]]] = {"pusher": (230, 26, 26), "block": (26, 64, 230)}
    goal_object: ClassVar[str] = "block"
    goal_object_heading: ClassVar[bool] = True
    pose_tolerance: ClassVar[tuple[float, float]] = (ARENA_SIDE / 20.0, 0.2)
    """(centroid distance, yaw error) within which ``pose_success`` holds."""

    def __init__(
        self,
        xml_file: str = "push_t.xml",
        frame_skip: int = 10,
        size: int | None = None,
        success_coverage: float = 0.95,
        block_extent: float = 0.2,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        utils.EzPickle.__init__(self, xml_file=xml_file, frame_skip=frame_skip, size=size,
                                success_coverage=success_coverage, block_extent=block_extent, render_mode=render_mode,
                                **kwargs)
        if not 0.0 < success_coverage <= 1.0:
            raise ValueError(f"success_coverage must be in (0, 1], got {success_coverage}")
        self.success_coverage = float(success_coverage)
        self.block_extent = float(block_extent)
        self.goal_yaw = 0.0
        PixelMujocoEnv.__init__(self, xml_file, frame_skip, size, self.pose_tolerance[0], render_mode, **kwargs)
        self._tee_body = self.model.body("tee").id
        self.pusher_radius = float(self.model.geom_size[self._geom_ids["pusher"], 0])
        wall = self.model.geom("wall_px")
        self.arena_half = float(wall.pos[0] - wall.size[0])
        self._push = None  # the expert's contact: (point in the T's frame [2], push direction in its frame [2], steps)
        _, normals = tee.outline_normals()
        a, b = tee.OUTLINE, np.roll(tee.OUTLINE, -1, axis=0)
        fractions = np.array([0.2, 0.5, 0.8])
        self._contacts = (a[:, None] + (b - a)[:, None] * fractions[None, :, None]).reshape(-1, 2)
        self._directions = np.repeat(-normals, len(fractions), axis=0)  # push inward

    # ---------------------------------------------------------------- pose and goal
    def block_pose(self) -> np.ndarray:
        """The T's (x, y, yaw): float64 [3]."""
        return np.array([*self.data.qpos[2:4], tee.wrap_angle(self.data.qpos[4])])

    def goal_pose(self) -> np.ndarray:
        """The goal (x, y, yaw) of the T: float64 [3]."""
        return np.array([*self.goal, self.goal_yaw])

    def reset_model(self) -> np.ndarray:
        self._push = None
        return super().reset_model()

    def _set_goal(self, goal_qpos: np.ndarray) -> None:
        super()._set_goal(goal_qpos)
        self.goal_yaw = float(tee.wrap_angle(goal_qpos[4]))

    def object_positions(self) -> dict[str, np.ndarray]:
        """World (x, y): the pusher's centre and the T's centroid: name -> float64 [2]."""
        return {"pusher": self.data.qpos[:2].copy(), "block": self.data.xpos[self._tee_body, :2].copy()}

    def pose_errors(self, goal: np.ndarray | None = None) -> tuple[float, float, float]:
        """(coverage of the goal T, centroid distance, |yaw error|) against ``goal`` (x, y, yaw; default the episode's)."""
        pose, goal = self.block_pose(), self.goal_pose() if goal is None else np.asarray(goal, dtype=np.float64)
        return (tee.coverage(pose, goal), float(np.linalg.norm(pose[:2] - goal[:2])),
                float(abs(tee.wrap_angle(pose[2] - goal[2]))))

    def _get_rew(self) -> tuple[float, dict[str, Any]]:
        covered, distance, angle = self.pose_errors()
        pose_success = distance < self.pose_tolerance[0] and angle < self.pose_tolerance[1]
        return covered, {"success": bool(covered >= self.success_coverage), "coverage": covered,
                         "state_distance": distance, "angle_error": angle, "pose_success": bool(pose_success)}

    def state_distance(self) -> float:
        return self.pose_errors()[1]

    def goal_reached(self, goal: np.ndarray) -> bool:
        """Whether the T covers ``success_coverage`` of the pose ``goal`` (x, y, yaw)."""
        return self.pose_errors(goal)[0] >= self.success_coverage

    # ---------------------------------------------------------------- task sampling
    def _clear_of_tee(self, point: np.ndarray, pose: np.ndarray, margin: float) -> bool:
        local = tee.to_world(point[None] - pose[:2], np.array([0.0, 0.0, -pose[2]]))[0]
        for rect in tee.RECTANGLES:
            low, high = rect.min(0) - self.pusher_radius - margin, rect.max(0) + self.pusher_radius + margin
            if np.all(local > low) and np.all(local < high):
                return False
        return True

    def sample_goal_position(self, rng: np.random.Generator) -> np.ndarray:
        """A T pose (x, y, yaw) with the centroid uniform over the goal square and yaw uniform: float64 [3]."""
        return np.array([*rng.uniform(-self.block_extent, self.block_extent, size=2), rng.uniform(-np.pi, np.pi)])

    def _sample_task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.np_random
        start, goal = self.sample_goal_position(rng), self.sample_goal_position(rng)
        limit = self.arena_half - self.pusher_radius - 0.01
        while True:
            pusher = rng.uniform(-limit, limit, size=2)
            if self._clear_of_tee(pusher, start, 0.03):
                break
        tip = np.array([0.0, tee.STEM_Y - tee.STEM_HALF[1] - self.pusher_radius - 0.01])
        pusher_at_goal = np.clip(tee.to_world(tip, goal), -limit, limit)
        return np.concatenate([pusher, start]), np.zeros(5), np.concatenate([pusher_at_goal, goal])

    # ---------------------------------------------------------------- the scripted expert
    def scripted_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Push the T toward ``goal`` (x, y, yaw; default the episode's goal pose): float32 [2] in [-1, 1].

        It picks the point of the T's outline whose inward push best moves the T along the pose error (the
        push's translation along the centroid error plus its turning arm times the yaw error, per unit of
        motion), circles round the T to just outside that point, then pushes through it for a few steps.
        """
        goal = self.goal_pose() if goal is None else np.asarray(goal, dtype=np.float64)
        pusher, velocity = self.data.qpos[:2], self.data.qvel[:2]
        pose = self.block_pose()
        if self.goal_reached(goal):
            self._push = None
            return steer_to(pusher, velocity, pusher, gain=0.0, damping=0.5)
        error = goal[:2] - pose[:2]
        yaw_error = float(tee.wrap_angle(goal[2] - pose[2]))
        limit = self.arena_half - self.pusher_radius
        gyration = 0.11
        remaining = float(np.hypot(np.linalg.norm(error), gyration * yaw_error))
        depth = float(np.clip(remaining, 0.01, 0.06))  # push less far the nearer the goal
        if self._push is not None:
            point, direction, left = self._push
            contact = tee.to_world(point, pose)
            push = tee.to_world(direction, np.array([0.0, 0.0, pose[2]]))
            arm = (contact[0] - pose[0]) * push[1] - (contact[1] - pose[1]) * push[0]
            helps = float(push @ error + arm * yaw_error) > 0.2 * remaining * np.sqrt(1.0 + (arm / gyration) ** 2)
            if left > 0 and helps and np.linalg.norm(pusher - (contact - push * self.pusher_radius)) < 0.06:
                self._push = (point, direction, left - 1)
                target = contact + push * depth
                return steer_to(pusher, velocity, np.clip(target, -limit, limit), gain=10.0, damping=0.3)
            self._push = None
        # choose the contact whose push best reduces the pose error
        points = tee.to_world(self._contacts, pose)
        pushes = tee.to_world(self._directions, np.array([0.0, 0.0, pose[2]]))
        arms = (points[:, 0] - pose[0]) * pushes[:, 1] - (points[:, 1] - pose[1]) * pushes[:, 0]
        score = (pushes @ error + arms * yaw_error) / np.sqrt(1.0 + (arms / gyration) ** 2)
        best = int(np.argmax(score))
        contact, push = points[best], pushes[best]
        ready = contact - push * (self.pusher_radius + 0.015)
        if np.linalg.norm(pusher - ready) < 0.03:
            self._push = (self._contacts[best], self._directions[best], 6 if remaining > 0.1 else 2)
            return steer_to(pusher, velocity, np.clip(contact + push * depth, -limit, limit), gain=10.0, damping=0.3)
        # circle round the T at a clearance radius toward the ready point, then step in
        relative, wanted = pusher - pose[:2], ready - pose[:2]
        clear = tee.RADIUS + self.pusher_radius + 0.03
        angle, goal_angle = np.arctan2(relative[1], relative[0]), np.arctan2(wanted[1], wanted[0])
        offset = float(tee.wrap_angle(goal_angle - angle))
        if abs(offset) < 0.4 or self._clear_of_tee(ready + (pusher - ready) * 0.5, pose, 0.0):
            target = ready
        elif np.linalg.norm(relative) < clear - 0.03:  # too near to circle round: back away first
            target = pose[:2] + clear * relative / max(float(np.linalg.norm(relative)), 1e-6)
        else:
            carrot = angle + np.sign(offset) * min(abs(offset), 0.7)
            target = pose[:2] + clear * np.array([np.cos(carrot), np.sin(carrot)])
        return steer_to(pusher, velocity, np.clip(target, -limit, limit), gain=12.0, damping=0.3)

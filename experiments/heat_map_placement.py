"""Where a cost heat map puts each task's goal object (``worldvid.experiments.cost_diagnostics.heat_map``).

PointReach: the agent itself; Push: the block, its pusher just behind it on the line block -> goal, as Push's goal
images show it; PushT: the T at the goal's yaw, the pusher clear of it on the line T -> goal; Reacher: the fingertip
(two-link inverse kinematics, the elbow bent as in the goal image). ``placement`` gives the qpos, ``grid_extent``
the half-width of the grid, ``placed_state`` the simulator state with that qpos at rest.
"""

from __future__ import annotations

import numpy as np

from worldvid.envs import tee_geometry as tee
from worldvid.envs.base import PixelMujocoEnv
from worldvid.envs.point_reach import PointReachEnv
from worldvid.envs.push import PushEnv
from worldvid.envs.push_t import PushTEnv
from worldvid.envs.reacher import ReacherEnv

PUSHER_GAP = 0.005
"""Gap (world units) between pusher and block in heat-map placements, as in Push's goal images."""


def placement(task: PixelMujocoEnv, point: np.ndarray) -> np.ndarray | None:
    """qpos [nq] that puts the goal object at world ``point`` (float [2]), or None if it cannot be there."""
    goal_qpos = task.goal_qpos
    if isinstance(task, PointReachEnv):
        return point.copy()  # the grid keeps the agent inside the walls
    if isinstance(task, (PushEnv, PushTEnv)):
        # the pusher rests behind the object on the line object -> goal, as the goal image shows it at the goal
        # (at the goal itself: the goal image's push direction, pusher -> object); Push's block sits against it,
        # PushT's T (at the goal's yaw) stays clear of it, whatever its yaw (the T's bounding circle)
        away = task.goal - point if np.linalg.norm(task.goal - point) > 1e-9 else goal_qpos[2:4] - goal_qpos[:2]
        u = away / np.linalg.norm(away)
        tee_pose = isinstance(task, PushTEnv)
        reach = tee.RADIUS + task.pusher_radius if tee_pose else task.contact_distance(u)
        pusher = point - u * (reach + PUSHER_GAP)
        fits = np.all(np.abs(pusher) <= task.arena_half - task.pusher_radius)  # the grid keeps the object inside
        return np.concatenate([pusher, point, [task.goal_yaw] if tee_pose else []]) if fits else None
    if isinstance(task, ReacherEnv):
        # closed-form two-link inverse kinematics, elbow bent the way the goal image's is
        l0, l1 = _reacher_links(task)
        cos_elbow = (point @ point - l0**2 - l1**2) / (2 * l0 * l1)
        elbow = np.arccos(np.clip(cos_elbow, -1.0, 1.0))  # full reach (cos 1) survives rounding
        if abs(cos_elbow) > 1.0 + 1e-9 or elbow > np.max(np.abs(task.model.joint("joint1").range)):
            return None  # out of reach, or the elbow would pass its joint limit
        elbow = elbow if goal_qpos[1] >= 0 else -elbow
        shoulder = np.arctan2(point[1], point[0]) - np.arctan2(l1 * np.sin(elbow), l0 + l1 * np.cos(elbow))
        return np.array([shoulder, elbow])
    raise ValueError(f"no heat-map placement for {type(task).__name__}")


def _reacher_links(task: ReacherEnv) -> tuple[float, float]:
    """Lengths (world units) shoulder -> elbow and elbow -> fingertip centre, from the MJCF."""
    return float(np.linalg.norm(task.model.body("link1").pos[:2])), float(np.linalg.norm(task.model.geom("fingertip").pos[:2]))


def grid_extent(task: PixelMujocoEnv) -> float:
    """Half-width (world units) of the square grid of goal-object positions: where the object can be."""
    if isinstance(task, ReacherEnv):
        return sum(_reacher_links(task))
    if isinstance(task, PushTEnv):
        return task.arena_half - tee.RADIUS  # every yaw of the T fits inside the walls
    wall = task.model.geom("wall_px")
    return float(wall.pos[0] - wall.size[0] - task.model.geom(task.object_geoms[task.goal_object]).size[0])


def placed_state(task: PixelMujocoEnv, state: dict[str, np.ndarray], qpos: np.ndarray) -> dict[str, np.ndarray]:
    """``state`` (a ``get_sim_state()``) with qpos [nq] and zero velocities; its ``physics`` (MuJoCo's
    integration state) is time, qpos [nq], qvel [nv], then the rest."""
    nq, nv = task.model.nq, task.model.nv
    physics = state["physics"].copy()
    if not np.array_equal(physics[1 : 1 + nq], state["qpos"]):
        raise RuntimeError("unexpected layout of get_sim_state()['physics']: qpos is not at [1 : 1 + nq]")
    physics[1 : 1 + nq], physics[1 + nq : 1 + nq + nv] = qpos, 0.0
    return {**state, "physics": physics, "qpos": qpos.copy(), "qvel": np.zeros(nv)}

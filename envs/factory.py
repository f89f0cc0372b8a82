"""Making an env from an id: canonical ids, the env class behind an id, and the pixel-observation factory.

The one place that turns a Gymnasium id into something worldvid can use; the data collector, the planners'
evaluation, the open-loop checks, the dream env and the command line all call it.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from worldvid.envs import TASKS
from worldvid.envs.gl_backend import ensure_backend
from worldvid.envs.wrappers import PixelObservation

MIN_FRAME_SIZE = 8
"""Smallest frame side, in pixels, worldvid renders."""

GYMNASIUM_CAMERAS: dict[str, dict[str, Any]] = {
    "Reacher-v5": {"distance": 0.6, "elevation": -90.0, "azimuth": 90.0, "lookat": (0.0, 0.0, 0.0)},
    "Pusher-v5": {"distance": 2.0, "elevation": -90.0, "azimuth": 90.0, "lookat": (0.15, -0.4, 0.0)},
    "Swimmer-v5": {"distance": 4.5, "elevation": -90.0, "azimuth": 90.0, "lookat": (0.0, 0.0, 0.0)},
}
"""Top-down cameras for Gymnasium MuJoCo ids whose default view wastes a small frame (``default_camera_config``).

Reacher-v5's default camera looks at the arena from afar at an angle: at 32 px the arm is a few dark pixels
(10% of pixels change in 30 random steps); from straight above at 0.6 m it fills the frame (35%). Pusher-v5's
default view is 4 m away (3% change); from 2 m above the table, 14%. Swimmer-v5's default camera follows the
swimmer at a slant across the floor; from 4.5 m straight above the origin the whole body stays in view over
1,000 random steps (it drifts under 1 m) and 3.7% of pixels change per step. Used unless the caller passes its own
``default_camera_config``, ``camera_id`` or ``camera_name``; other ids keep Gymnasium's camera.
"""


def canonical_env_id(env_id: str) -> str:
    """``"worldvid:worldvid/PointReach-v0"`` -> ``"worldvid/PointReach-v0"`` (the module prefix only imports)."""
    return env_id.split(":", 1)[1] if ":" in env_id else env_id


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``; ValueError naming the id when Gymnasium does not know it."""
    try:
        return gym.spec(env_id)
    except (gym.error.Error, ModuleNotFoundError) as err:
        raise ValueError(f"unknown environment id {env_id!r}: {err}") from err


def env_class(env_id: str) -> Callable[..., gym.Env]:
    """The class (or creator function) registered for ``env_id``, loaded without making an env."""
    creator = env_spec(env_id).entry_point
    return gym.envs.registration.load_env_creator(creator) if isinstance(creator, str) else creator


def make_pixel_env(env_id: str, size: int = 64, **env_kwargs: Any) -> gym.Env:
    """Make ``env_id`` with uint8 [size, size, 3] observations.

    worldvid's own tasks render their observations themselves (``env_kwargs`` may hold their options, e.g.
    ``goal_conditioned=True``). Any other registered env must support ``render_mode="rgb_array"``; its rendered
    frames become the observations (``PixelObservation``); a MuJoCo one renders with the GL backend
    ``envs/gl_backend.py`` chooses, through the camera ``GYMNASIUM_CAMERAS`` names for its id, if any.
    Raises ValueError for an unknown id, an env that cannot render rgb_array, or a non-Box action space.
    """
    if size < MIN_FRAME_SIZE:
        raise ValueError(f"frame size must be >= {MIN_FRAME_SIZE} pixels, got {size}")
    spec = env_spec(env_id)
    if canonical_env_id(spec.id) in TASKS:
        env = gym.make(env_id, size=size, **env_kwargs)
    else:
        modes = _render_modes(env_class(env_id))
        if modes is not None and "rgb_array" not in modes:
            raise ValueError(f"{env_id} cannot render rgb_array frames (render modes: {modes})")
        camera = GYMNASIUM_CAMERAS.get(canonical_env_id(spec.id))
        if camera is not None and not {"default_camera_config", "camera_id", "camera_name"} & set(env_kwargs):
            env_kwargs = {**env_kwargs, "default_camera_config": {k: np.asarray(v) if isinstance(v, tuple) else v
                                                                  for k, v in camera.items()}}
        try:
            env = gym.make(env_id, render_mode="rgb_array", width=size, height=size, **env_kwargs)
        except TypeError:  # an env without width/height keywords: resize its frames instead
            env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
        if is_mujoco_env(env):
            ensure_backend()  # before its renderer's first GL context, made at the first observation
        env = PixelObservation(env, size)
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"worldvid needs a continuous (Box) action space; {env_id} has {env.action_space}")
    return env


def _render_modes(creator: Callable[..., gym.Env]) -> list[str] | None:
    """The render modes the env's class declares (None when it declares none)."""
    metadata = getattr(creator, "metadata", None)
    return metadata.get("render_modes") if isinstance(metadata, dict) else None


def is_mujoco_env(env: gym.Env) -> bool:
    """Whether ``env`` is one of Gymnasium's MuJoCo envs (checked without importing mujoco for other envs)."""
    if "mujoco" not in sys.modules:
        return False
    from gymnasium.envs.mujoco import MujocoEnv

    return isinstance(env.unwrapped, MujocoEnv)


def sim_state_io(env: Any) -> tuple[Callable[[], Any], Callable[[Any], None]] | None:
    """(save, restore) of the simulator state of ``env`` (a wrapped env): worldvid's tasks through their
    ``get_sim_state``/``set_sim_state``, any other Gymnasium MuJoCo env through a copy of its qpos/qvel and
    ``set_state``; None for an env that is neither."""
    task = env.unwrapped
    if hasattr(task, "get_sim_state") and hasattr(task, "set_sim_state"):
        return task.get_sim_state, task.set_sim_state
    if is_mujoco_env(env):
        return (lambda: (task.data.qpos.copy(), task.data.qvel.copy())), (lambda state: task.set_state(*state))
    return None

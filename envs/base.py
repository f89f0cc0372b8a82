"""Shared machinery of worldvid's pixel MuJoCo tasks: top-down rendering, goal images, state copy, checks.

Every task is a ``MujocoEnv`` in Gymnasium's v5 shape whose observation is the scene seen by a fixed,
top-down orthographic camera named ``"top"``. The scene is flat-shaded (no lights, emissive materials),
so each task-relevant object renders as one exact RGB value (``object_colors``) and can be found by
colour in real or imagined frames (``worldvid.keypoints``).

A task subclass provides the MJCF, class attributes ``object_geoms``, ``object_colors`` and
``goal_object``, and four methods: ``_sample_task`` (start state and goal configuration),
``scripted_action`` (an expert using the true state), ``sample_goal_position`` (a reachable goal) and
``__init__`` (its keyword arguments, EzPickle; the options below pass through as ``**kwargs``, as in MuJoCo v5).

Options of every task (``PixelMujocoEnv.__init__``), all off by default so existing results are unchanged:
``goal_conditioned`` (Dict observations with the goal frame, ``envs/goal_conditioned.py``),
``terminate_on_success``, ``width`` / ``height`` (MuJoCo v5's names for ``size``) and ``render_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

from worldvid.envs.gl_backend import ensure_backend, renderer_failure
from worldvid.envs.goal_conditioned import check_flag, goal_observation, goal_space, success_info

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""Folder holding the tasks' MJCF files."""

CAMERA = "top"
"""Name of the observation camera in every task's MJCF."""

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

DEFAULT_SIZE = 64
"""Frame side, in pixels, when none of ``size``, ``width``, ``height`` is given."""
MIN_SIZE = 8
"""Smallest frame side a task renders."""


def pixels(name: str, value: Any) -> int:
    """``value`` as a frame side in pixels; ValueError naming ``name`` unless it is an integer >= ``MIN_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < MIN_SIZE:
        raise ValueError(f"{name} must be an integer >= {MIN_SIZE} (pixels), got {value!r}")
    return int(value)


def frame_side(size: int | None = None, width: int | None = None, height: int | None = None) -> int:
    """The side of a task's square frames from ``size`` and/or MuJoCo v5's ``width`` / ``height`` (``DEFAULT_SIZE``
    when none is given). ValueError when one is not an integer >= ``MIN_SIZE`` or the given ones differ."""
    given = {name: pixels(name, value) for name, value in (("size", size), ("width", width), ("height", height))
             if value is not None}
    if len(set(given.values())) > 1:
        named = ", ".join(f"{name}={value}" for name, value in given.items())
        raise ValueError(f"tasks render square frames, but {named} differ: give size, or width equal to height")
    return int(next(iter(given.values()), DEFAULT_SIZE))


def asset_path(xml_file: str) -> str:
    """An absolute path for ``xml_file``: kept if it is a path that exists, else looked up in ``ASSETS_DIR``."""
    path = Path(xml_file).expanduser()
    if not path.exists():
        path = ASSETS_DIR / xml_file
    if not path.exists():
        raise FileNotFoundError(f"MJCF file {xml_file!r} not found (also looked in {ASSETS_DIR})")
    return str(path.resolve())


def steer_to(
    position: np.ndarray, velocity: np.ndarray, target: np.ndarray, gain: float, damping: float = 0.0
) -> np.ndarray:
    """PD command toward ``target``: float32 [2] = clip(gain * (target - pos) - damping * vel, -1, 1)."""
    command = gain * (np.asarray(target) - position) - damping * np.asarray(velocity)
    return np.clip(command, -1.0, 1.0).astype(np.float32)


class PixelMujocoEnv(MujocoEnv):
    """Base class of the pixel tasks (not registered itself).

    Observation: uint8 [size, size, 3], the top-down orthographic view (``render()`` at ``render_size``); with
    ``goal_conditioned`` a dict ``{"observation": that frame, "desired_goal": goal_frame}``.
    Action: float32 [A] in [-1, 1]; wrong shapes and non-finite values raise ``ValueError``,
    out-of-range values are clipped to [-1, 1].
    Reward: ``-state_distance`` (for reporting; the planners use goal images). ``terminated`` is False unless
    ``terminate_on_success`` (then True at the step that reaches success); the registered time limit truncates.
    ``info``: ``success`` and ``is_success`` (bool, equal), ``state_distance`` (float, world units, goal object
    to goal); after ``reset`` also ``goal_frame`` (uint8 [size, size, 3]).

    Options: ``goal_conditioned`` (default False), ``terminate_on_success`` (default False); ``width`` /
    ``height`` are accepted for ``size`` (square frames: differing values raise ValueError); ``render_size``
    (default ``size``): the side of ``render()`` frames, e.g. for ``RecordVideo``, observations staying at
    ``size``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    object_geoms: ClassVar[dict[str, str]]
    """Task-relevant object name -> MJCF geom whose centre is the object's position."""
    object_colors: ClassVar[dict[str, tuple[int, int, int]]]
    """Task-relevant object name -> its rendered RGB (uint8 values; exact, the scene is flat-shaded)."""
    goal_object: ClassVar[str]
    """The object whose distance to ``goal`` defines success."""
    goal_object_heading: ClassVar[bool] = False
    """Whether the goal object's heading is part of its goal (its shape shows it, e.g. PushT's T): then its
    heading, read from image moments, is scored too (``worldvid.keypoints.locate_pose``)."""

    def __init__(
        self,
        xml_file: str,
        frame_skip: int,
        size: int | None,
        success_threshold: float,
        render_mode: str | None = None,
        *,
        goal_conditioned: bool = False,
        terminate_on_success: bool = False,
        width: int | None = None,
        height: int | None = None,
        render_size: int | None = None,
    ) -> None:
        size = frame_side(size, width, height)
        self.render_size = size if render_size is None else pixels("render_size", render_size)
        self.goal_conditioned = check_flag("goal_conditioned", goal_conditioned)
        self.terminate_on_success = check_flag("terminate_on_success", terminate_on_success)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
        if success_threshold <= 0:
            raise ValueError(f"success_threshold must be positive, got {success_threshold}")
        self.size = int(size)
        self.success_threshold = float(success_threshold)
        frame_space = Box(0, 255, (self.size, self.size, 3), np.uint8)
        observation_space = goal_space(frame_space) if self.goal_conditioned else frame_space
        MujocoEnv.__init__(
            self,
            asset_path(xml_file),
            frame_skip,
            observation_space,
            render_mode=render_mode,
            width=self.size,
            height=self.size,
        )
        visual = self.model.vis.global_  # the offscreen buffer must hold the larger of the two frame sizes
        visual.offwidth = max(visual.offwidth, self.render_size)
        visual.offheight = max(visual.offheight, self.render_size)
        if not np.allclose(self.model.actuator_ctrlrange, [-1.0, 1.0]):
            raise ValueError(f"{xml_file}: every actuator's ctrlrange must be [-1, 1]")
        self.action_space = Box(-1.0, 1.0, (self.model.nu,), np.float32)

        self._camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        orthographic = mujoco.mjtProjection.mjPROJ_ORTHOGRAPHIC
        if self._camera_id < 0 or self.model.cam_projection[self._camera_id] != orthographic:
            raise ValueError(f"{xml_file} needs an orthographic camera named {CAMERA!r}")
        self._geom_ids = {
            name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, geom)
            for name, geom in self.object_geoms.items()
        }
        missing = [geom for name, geom in self.object_geoms.items() if self._geom_ids[name] < 0]
        if missing or self.goal_object not in self.object_geoms:
            raise ValueError(f"{xml_file}: geoms {missing} missing, or goal object {self.goal_object!r} unlisted")
        self._renderers: dict[int, mujoco.Renderer] = {}
        self.goal = np.zeros(2)
        self.goal_qpos = self.init_qpos.copy()
        self.goal_frame = np.zeros(frame_space.shape, np.uint8)
        mujoco.mj_forward(self.model, self.data)  # positions and camera pose are valid even before reset

    # ---------------------------------------------------------------- subclass hooks
    def _sample_task(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw a start state and a goal with ``self.np_random``: (qpos [nq], qvel [nv], goal qpos [nq])."""
        raise NotImplementedError

    def scripted_action(self, goal: np.ndarray | None = None) -> np.ndarray:
        """An expert action from the true simulator state: float32 [A] in [-1, 1].

        It drives the goal object toward ``goal`` (world (x, y), float [2]; default: the episode's goal).
        """
        raise NotImplementedError

    def sample_goal_position(self, rng: np.random.Generator) -> np.ndarray:
        """A reachable position for the goal object drawn with ``rng``: world (x, y), float64 [2]."""
        raise NotImplementedError

    def _goal_or_default(self, goal: np.ndarray | None) -> np.ndarray:
        """``goal`` as float64 [2], or the episode's goal when None (for ``scripted_action``)."""
        return self.goal if goal is None else np.asarray(goal, dtype=np.float64)

    # ---------------------------------------------------------------- Gymnasium API
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (float [A], clipped to [-1, 1]) for ``frame_skip`` physics steps."""
        self.simulate(action)
        observation = self._get_obs()
        reward, info = self._score()
        return observation, reward, self.terminate_on_success and info["success"], False, info

    def simulate(self, action: np.ndarray) -> None:
        """The physics of ``step`` alone: apply ``action`` for ``frame_skip`` steps, render and score nothing (for
        planners that look only at where a sequence of actions ends)."""
        self.do_simulation(self._check_action(action), self.frame_skip)

    def _step_mujoco_simulation(self, ctrl: np.ndarray, n_frames: int) -> None:
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)
        # mj_step leaves positions-derived quantities (geom_xpos, Jacobians) one substep stale; the frame,
        # the reported distance and the scripted policies should all see the state the step ended in.
        mujoco.mj_forward(self.model, self.data)

    def reset_model(self) -> np.ndarray:
        """Draw start and goal, render the goal image (the scene in the goal configuration), return the first frame."""
        qpos, qvel, goal_qpos = self._sample_task()
        self._set_goal(goal_qpos)
        self.set_state(qpos, qvel)
        return self._get_obs()

    def _set_goal(self, goal_qpos: np.ndarray) -> None:
        """Make ``goal_qpos`` [nq] the goal: record it and the goal object's position, render the goal image.
        Leaves the simulator in the goal configuration (the caller restores its state)."""
        self.goal_qpos = np.asarray(goal_qpos, dtype=np.float64).copy()
        self.set_state(self.goal_qpos, np.zeros(self.model.nv))
        self.goal = self.object_positions()[self.goal_object]
        self.goal_frame = self._render_frame()

    def adopt_goal(self, goal_qpos: np.ndarray) -> dict[str, Any]:
        """Replace the episode's goal by the configuration ``goal_qpos`` [nq] (e.g. a state a policy reached from
        the start), keeping the current state; returns the info of the current state against the new goal,
        ``goal_frame`` included."""
        physics = self.get_sim_state()["physics"]
        goal_qpos = np.asarray(goal_qpos, dtype=np.float64)
        if goal_qpos.shape != (self.model.nq,):
            raise ValueError(f"goal_qpos must have shape ({self.model.nq},), got {goal_qpos.shape}")
        self._set_goal(goal_qpos)
        mujoco.mj_setState(self.model, self.data, physics, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        return self._get_reset_info()

    def goal_reached(self, goal: np.ndarray) -> bool:
        """Whether the goal object is within ``success_threshold`` of ``goal`` (as ``sample_goal_position`` draws it)."""
        return float(np.linalg.norm(self.object_positions()[self.goal_object] - np.asarray(goal)[:2])) < self.success_threshold

    def _get_reset_info(self) -> dict[str, Any]:
        return {**self._score()[1], "goal_frame": self.goal_frame.copy()}

    def _score(self) -> tuple[float, dict[str, Any]]:
        """``_get_rew`` with ``is_success`` beside its ``success``: what every step and reset reports."""
        reward, info = self._get_rew()
        return reward, {**info, **success_info(info["success"])}

    def _get_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        frame = self._render_frame()
        return goal_observation(frame, self.goal_frame) if self.goal_conditioned else frame

    def render_observation(self) -> np.ndarray:
        """The frame of the current state, uint8 [size, size, 3], as ``step`` would observe it (its
        ``"observation"`` entry when ``goal_conditioned``)."""
        return self._render_frame()

    def _get_rew(self) -> tuple[float, dict[str, Any]]:
        distance = self.state_distance()
        return -distance, {"success": bool(distance < self.success_threshold), "state_distance": distance}

    def render(self) -> np.ndarray | None:
        """The current frame, uint8 [render_size, render_size, 3] (by default the observed frame) when
        ``render_mode="rgb_array"``, else None."""
        return self._render_frame(self.render_size) if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}
        super().close()

    # ---------------------------------------------------------------- task state
    def _check_action(self, action: Any) -> np.ndarray:
        """float64 [A] action clipped to [-1, 1]; ``ValueError`` for a wrong shape or non-finite values."""
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as error:
            shape = self.action_space.shape
            raise ValueError(f"action must be a float array of shape {shape}, got {action!r}") from error
        if array.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"action must be finite, got {array} (NaN or inf)")
        return np.clip(array, -1.0, 1.0)

    def object_positions(self) -> dict[str, np.ndarray]:
        """World (x, y) of each task-relevant object: name -> float64 [2]."""
        return {name: self.data.geom_xpos[gid, :2].copy() for name, gid in self._geom_ids.items()}

    def state_distance(self) -> float:
        """Distance (world units) from the goal object to its goal position."""
        return float(np.linalg.norm(self.object_positions()[self.goal_object] - self.goal))

    @property
    def pixels_per_unit(self) -> float:
        """Pixels per world length unit in the observation (orthographic camera: size / view extent)."""
        return self.size / float(self.model.cam_fovy[self._camera_id])

    def world_to_pixel(self, points: np.ndarray) -> np.ndarray:
        """Project world points float [..., 3] (or [..., 2], on the floor) to (row, col) pixels float64 [..., 2].

        Pixel (i, j) covers [i, i+1) x [j, j+1) of the image plane, so its centre has coordinates (i, j);
        the same convention as a centroid of pixel indices.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] == 2:
            points = np.concatenate([points, np.zeros(points.shape[:-1] + (1,))], axis=-1)
        rotation = self.data.cam_xmat[self._camera_id].reshape(3, 3)  # columns: camera axes in world
        local = (points - self.data.cam_xpos[self._camera_id]) @ rotation
        half = self.size / 2.0
        ppu = self.pixels_per_unit
        return np.stack([half - local[..., 1] * ppu - 0.5, half + local[..., 0] * ppu - 0.5], axis=-1)

    def pixel_to_world(self, pixels: np.ndarray) -> np.ndarray:
        """(row, col) pixels float [..., 2] -> world (x, y) float64 [..., 2] on the floor (``world_to_pixel``'s inverse)."""
        pixels = np.asarray(pixels, dtype=np.float64)
        half, ppu = self.size / 2.0, self.pixels_per_unit
        local = np.stack([(pixels[..., 1] + 0.5 - half) / ppu, (half - pixels[..., 0] - 0.5) / ppu,
                          -self.data.cam_xpos[self._camera_id][2] * np.ones(pixels.shape[:-1])], axis=-1)
        rotation = self.data.cam_xmat[self._camera_id].reshape(3, 3)
        return (local @ rotation.T + self.data.cam_xpos[self._camera_id])[..., :2]

    def object_pixel_positions(self) -> dict[str, np.ndarray]:
        """True (row, col) pixel position of each task-relevant object in the current frame: name -> float64 [2]."""
        return {name: self.world_to_pixel(position) for name, position in self.object_positions().items()}

    def goal_pixel_position(self) -> np.ndarray:
        """(row, col) pixel position of the goal object in ``goal_frame``: float64 [2]."""
        return self.world_to_pixel(self.goal)

    def get_sim_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume this exact simulation, as copies.

        Keys: ``physics`` (float64, MuJoCo's full integration state: time, qpos, qvel, act, warm start, ctrl, ...),
        ``qpos`` [nq], ``qvel`` [nv], ``time`` [] (readable views of the same), ``goal`` [2], ``goal_qpos`` [nq],
        ``goal_frame`` uint8 [size, size, 3].
        """
        physics = np.empty(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, _STATE_SPEC)
        return {
            "physics": physics,
            "qpos": self.data.qpos.copy(),
            "qvel": self.data.qvel.copy(),
            "time": np.array(self.data.time),
            "goal": self.goal.copy(),
            "goal_qpos": self.goal_qpos.copy(),
            "goal_frame": self.goal_frame.copy(),
        }

    def set_sim_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a ``get_sim_state()`` result (from this env or another of the same task and size)."""
        physics = np.asarray(state["physics"], dtype=np.float64)
        expected = mujoco.mj_stateSize(self.model, _STATE_SPEC)
        if physics.shape != (expected,):
            raise ValueError(f"state['physics'] must have shape ({expected},), got {physics.shape}")
        mujoco.mj_setState(self.model, self.data, physics, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        self.goal = np.asarray(state["goal"], dtype=np.float64).copy()
        self.goal_qpos = np.asarray(state["goal_qpos"], dtype=np.float64).copy()
        self.goal_frame = np.asarray(state["goal_frame"], dtype=np.uint8).copy()

    # ---------------------------------------------------------------- rendering
    def _render_frame(self, side: int | None = None) -> np.ndarray:
        """The current scene from the top camera: uint8 [side, side, 3] (default ``size``), a fresh array."""
        side = self.size if side is None else side
        renderer = self._renderers.get(side)
        if renderer is None:
            # Created lazily so that pickled / forked envs open their own GL context; one per frame size.
            ensure_backend()
            try:
                renderer = self._renderers[side] = mujoco.Renderer(self.model, side, side)
            except (mujoco.FatalError, ImportError, RuntimeError, OSError) as error:
                raise RuntimeError(renderer_failure(error)) from error
        renderer.update_scene(self.data, camera=self._camera_id)
        return renderer.render()

"""Dream-v0: a saved ``WorldModel`` as a Gymnasium environment, so any agent can act inside imagination.

``reset`` takes K context frames and the actions between them either from a trajectory store (a random
episode and time; before an episode's start the first frame is repeated and the actions are zero, as in
training) or, without a store, from a real reset of the model's own task followed by K steps of correlated
random actions. ``step(action)`` imagines the next frame with one model call. The reward is
``-cost(next frame, goal frame)`` for the goal-image cost named by ``cost`` (``worldvid.costs``), or 0 when
there is no goal frame (or ``cost=None``). The registered time limit truncates.

Success: Dream-v0 has no true state, so it cannot know whether an imagined frame reached the goal. It counts
success only where the user says what it is, ``success_cost``: a frame succeeds when its cost to the goal frame
is at most that (e.g. ``cost="learned", success_cost=2.0``: predicted within 2 steps of the goal). Without it
``info["success"]`` and ``info["is_success"]`` are always False, and ``terminate_on_success`` never ends an
episode. ``goal_conditioned=True`` observes ``{"observation": frame, "desired_goal": goal frame}``.

Reproducibility: the env's ``np_random`` (seeded by ``reset(seed=...)``) picks the start and seeds a
``torch.Generator`` that draws the sampler's initial noise, one draw per step from this env's own generator.
``DreamVectorEnv`` keeps one generator per sub-env and draws each row's noise from it separately, so the noise
a sub-env sees does not depend on the batch it is stepped in (see ``imagine_next``). Where a dream starts
(a store or a real reset) and a dream's running state are ``envs/dream_start.py``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import utils
from gymnasium.spaces import Box, Dict
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldvid.device import resolve_device
from worldvid.envs.dream_start import Dream, DreamScore, StartSampler
from worldvid.envs.goal_conditioned import GOAL_KEY, OBSERVATION_KEY, check_flag, goal_space, success_info
from worldvid.model import WorldModel, randn
from worldvid.run_folder import RunFolder

DEFAULT_MAX_EPISODE_STEPS = 50
"""Time limit ``envs/__init__.py`` registers Dream-v0 with (override with ``max_episode_steps=``)."""

RENDER_FPS = 10


# ---------------------------------------------------------------------------- model and sampling
def load_world_model(model: WorldModel | str | os.PathLike, device: torch.device | str | None = None) -> WorldModel:
    """A ``WorldModel`` from an instance (moved to ``device`` if given, else left where it is), a run folder RUN or
    its RUN/model folder (loaded onto ``device``; None: CUDA when present, else CPU)."""
    if isinstance(model, WorldModel):
        return model.to(resolve_device(device)).eval() if device is not None else model.eval()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a WorldModel or a path to a run or model folder, got {type(model).__name__}")
    return RunFolder.of(model).load_model(device=resolve_device(device))


def imagine_next(
    model: WorldModel,
    frames: np.ndarray,
    actions: np.ndarray,
    generators: Sequence[torch.Generator],
    num_steps: int | None = None,
) -> np.ndarray:
    """Sample the next frame of B independent streams, row i's initial noise drawn from ``generators[i]`` alone.

    frames: uint8 [B, K, H, W, 3] = f[t-K+1..t]; actions: float32 [B, K, A] = a[t-K+1..t] (the last is the
    action taken now). Returns uint8 [B, H, W, 3]. Equal to ``model.predict_next(frames[i:i+1], actions[i:i+1],
    generator=generators[i])`` row by row (same noise, same sampler), but one batched network call.

    """
    if len(generators) != frames.shape[0]:
        raise ValueError(f"need one generator per row: {frames.shape[0]} rows, {len(generators)} generators")
    c = model.config
    shape = (1, c.channels, c.frame_size, c.frame_size)
    noise = torch.cat([randn(shape, g, model.device) for g in generators])
    return model.predict_next(frames, np.asarray(actions, dtype=np.float32), num_steps=num_steps, noise=noise).cpu().numpy()


def check_action(action: Any, space: Box) -> np.ndarray:
    """A valid action as float32 of ``space.shape``, clipped to the bounds.

    Raises TypeError for a non-numeric action, ValueError for a wrong shape or a NaN / infinite value.
    Out-of-range values are clipped (as worldvid's real tasks do), not rejected.
    """
    try:
        array = np.asarray(action)
    except (TypeError, ValueError) as error:
        raise TypeError(f"action must be a numeric array of shape {space.shape}, got {action!r}") from error
    if array.dtype.kind not in "iuf":
        raise TypeError(f"action must be a numeric (int or float) array of shape {space.shape}, got dtype {array.dtype}")
    if array.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action must be finite, got {array} (NaN or inf)")
    return np.clip(array.astype(np.float32), space.low, space.high)


# ---------------------------------------------------------------------------- one dream
def _observation_space(model: WorldModel, goal_conditioned: bool) -> Box | Dict:
    c = model.config
    frames = Box(0, 255, (c.frame_size, c.frame_size, c.channels), np.uint8)
    return goal_space(frames) if goal_conditioned else frames


class DreamEnv(gym.Env, utils.EzPickle):
    """A Gymnasium env whose ``step`` imagines the next frame with a ``WorldModel``.

    Args:
        model: a ``WorldModel``, a training run folder RUN, or its RUN/model folder.
        data: episode store folder to draw starts from; None resets the model's own task (``config.env_id``).
        cost: goal-image cost of the reward (``worldvid.costs.COSTS``: "keypoint", "blur", "pixel", "learned"),
            or None.
        cost_model: run folder of a learned goal distance (``worldvid train-cost``), for cost "learned".
        device: where the model runs (None: CUDA when present, else CPU, for a path; unchanged for an instance).
        num_steps: sampler steps per frame (None: the model's ``config.num_steps``).
        episodes: restrict store starts to these episode indices (e.g. a run's held-out episodes).
        render_mode: None or "rgb_array".
        goal_conditioned: observe ``{"observation": frame, "desired_goal": goal frame}`` (a ``Dict`` space; reset
            raises ValueError for a start without a goal frame).
        terminate_on_success: ``terminated`` is True at the step whose frame succeeds (needs ``success_cost``).
        success_cost: a frame succeeds when ``cost(frame, goal) <= success_cost``; None: never (module docstring).

    Observation: uint8 [H, W, 3] (``Box(0, 255)``), the latest imagined (or, after reset, real) frame; with
    ``goal_conditioned`` the dict of it and the goal frame.
    Action: float32 [A] in [-1, 1] (``A``: the task's action size, ``config.action_dim`` except for a
    multi-task model's shorter task); non-numeric -> TypeError, wrong shape or NaN / inf -> ValueError, out of
    range -> clipped. Reward: ``-cost(next frame, goal)`` or 0.
    ``info``: ``goal_frame`` (uint8 [H, W, 3] or None), ``success`` and ``is_success`` (equal); after reset also
    ``origin`` (where the start came from).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        model: WorldModel | str | os.PathLike,
        data: str | os.PathLike | None = None,
        cost: str | None = "keypoint",
        cost_model: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        num_steps: int | None = None,
        episodes: Sequence[int] | None = None,
        render_mode: str | None = None,
        goal_conditioned: bool = False,
        terminate_on_success: bool = False,
        success_cost: float | None = None,
    ) -> None:
        utils.EzPickle.__init__(self, model=model, data=data, cost=cost, cost_model=cost_model, device=device,
                                num_steps=num_steps, episodes=episodes, render_mode=render_mode,
                                goal_conditioned=goal_conditioned, terminate_on_success=terminate_on_success,
                                success_cost=success_cost)
        self.goal_conditioned = check_flag("goal_conditioned", goal_conditioned)
        self.terminate_on_success = check_flag("terminate_on_success", terminate_on_success)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.model = load_world_model(model, device)
        self.num_steps = num_steps
        self.model.sigmas(num_steps)  # validates num_steps now rather than at the first step
        self.starts = StartSampler(self.model, data, episodes)
        self.score = DreamScore(cost, self.starts.env_id, cost_model, self.model.device, success_cost)
        self.observation_space = _observation_space(self.model, self.goal_conditioned)
        self.action_space = Box(-1.0, 1.0, (self.starts.action_dim,), np.float32)
        self._dream: Dream | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        """Draw a start (store episode and time, or a real reset); returns its last frame (or dict) and info."""
        super().reset(seed=seed)
        dream = self._dream = Dream.start(self.starts, self.np_random)
        return dream.observation(self.goal_conditioned), dream.reset_info(self.score)

    def step(self, action: Any) -> tuple[np.ndarray | dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Imagine the frame after ``action`` (float [A]); one model call."""
        if self._dream is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        action = check_action(action, self.action_space)
        dream = self._dream
        frame = imagine_next(self.model, dream.frames[None], dream.window(action)[None], [dream.generator], self.num_steps)[0]
        dream.advance(frame, action)
        reward, success = self.score(frame, dream.goal)
        info = {**dream.info(), **success_info(success)}
        return dream.observation(self.goal_conditioned), reward, self.terminate_on_success and success, False, info

    def render(self) -> np.ndarray | None:
        """The current frame uint8 [H, W, 3] when ``render_mode="rgb_array"`` (None before reset or otherwise)."""
        if self.render_mode != "rgb_array" or self._dream is None:
            return None
        return self._dream.frames[-1].copy()

    @property
    def goal_frame(self) -> np.ndarray | None:
        """The current dream's goal image, uint8 [H, W, 3], or None."""
        return None if self._dream is None or self._dream.goal is None else self._dream.goal.copy()

    def close(self) -> None:
        self.starts.close()
        super().close()


# ---------------------------------------------------------------------------- N dreams, one model call
class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams stepped together with one batched model call per step.

    Same arguments as ``DreamEnv`` plus ``num_envs``, ``max_episode_steps`` (the time limit each sub-env is
    truncated at; ``gym.make_vec`` passes the registered one) and ``autoreset_mode`` (default NEXT_STEP, as
    gymnasium's ``SyncVectorEnv``; SAME_STEP and DISABLED behave as there too). Sub-env i behaves exactly as a
    ``DreamEnv`` made with the same arguments and reset with the same seed: ``reset(seed=s)`` seeds sub-env i
    with ``s + i`` (a list gives one seed each), as ``SyncVectorEnv`` does, and each sub-env keeps its own
    ``np_random`` and noise generator. Observations uint8 [N, H, W, 3] (with ``goal_conditioned`` a dict of two
    such arrays, "observation" and "desired_goal"), rewards float64 [N], infos batched as ``SyncVectorEnv``
    batches them.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS,
                                          "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        model: WorldModel | str | os.PathLike | None = None,
        data: str | os.PathLike | None = None,
        cost: str | None = "keypoint",
        cost_model: str | os.PathLike | None = None,
        device: torch.device | str | None = None,
        num_steps: int | None = None,
        episodes: Sequence[int] | None = None,
        max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        goal_conditioned: bool = False,
        terminate_on_success: bool = False,
        success_cost: float | None = None,
    ) -> None:
        if model is None:
            raise ValueError("DreamVectorEnv needs model= (a WorldModel, a run folder or a model folder)")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.goal_conditioned = check_flag("goal_conditioned", goal_conditioned)
        self.terminate_on_success = check_flag("terminate_on_success", terminate_on_success)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.model = load_world_model(model, device)
        self.num_steps = num_steps
        self.model.sigmas(num_steps)
        self.starts = StartSampler(self.model, data, episodes)
        self.score = DreamScore(cost, self.starts.env_id, cost_model, self.model.device, success_cost)
        self.single_observation_space = _observation_space(self.model, self.goal_conditioned)
        self.single_action_space = Box(-1.0, 1.0, (self.starts.action_dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._dreams: list[Dream | None] = [None] * self.num_envs
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, np.bool_)

    # ------------------------------------------------------------------ per sub-env, as DreamEnv does it
    def _reset_one(self, i: int, seed: int | None) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random(seed)
        dream = self._dreams[i] = Dream.start(self.starts, self._rngs[i])
        self._elapsed[i] = 0
        self._autoreset[i] = False
        return dream.observation(self.goal_conditioned), dream.reset_info(self.score)

    def _step_many(self, rows: list[int], actions: np.ndarray) -> dict[int, tuple[np.ndarray, float, bool, bool, dict[str, Any]]]:
        """Step sub-envs ``rows`` with ``actions[row]`` in one model call; returns row -> 5-tuple."""
        if not rows:
            return {}
        dreams = [self._dreams[i] for i in rows]
        frames = np.stack([d.frames for d in dreams])
        windows = np.stack([d.window(actions[i]) for d, i in zip(dreams, rows)])
        nexts = imagine_next(self.model, frames, windows, [d.generator for d in dreams], self.num_steps)
        out = {}
        for frame, dream, i in zip(nexts, dreams, rows):
            dream.advance(frame, actions[i])
            self._elapsed[i] += 1
            truncated = self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps
            reward, success = self.score(frame, dream.goal)
            out[i] = (dream.observation(self.goal_conditioned), reward, self.terminate_on_success and success,
                      bool(truncated), {**dream.info(), **success_info(success)})
        return out

    # ------------------------------------------------------------------ VectorEnv API
    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (or those in ``options["reset_mask"]``); seed int s -> sub-env i gets s + i."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for num_envs={self.num_envs}")
        mask = np.ones(self.num_envs, np.bool_)
        if options is not None and "reset_mask" in options:
            mask = options["reset_mask"]
            if not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True, got {mask!r}")
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            _, info = self._reset_one(int(i), seeds[i])
            infos = self._add_info(infos, info, int(i))
        return self._observations(), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env with ``actions`` float [N, A] (validated as ``DreamEnv`` validates one action)."""
        if any(d is None for d in self._dreams):
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_action(actions, self.action_space)
        n = self.num_envs
        rewards = np.zeros(n, np.float64)
        terminated = np.zeros(n, np.bool_)
        truncated = np.zeros(n, np.bool_)
        results: dict[int, tuple] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            stepping = [i for i in range(n) if not self._autoreset[i]]
            results = self._step_many(stepping, actions)
            for i in range(n):
                if self._autoreset[i]:
                    obs, info = self._reset_one(i, None)
                    results[i] = (obs, 0.0, False, False, info)
        elif self.autoreset_mode == AutoresetMode.DISABLED:
            if self._autoreset.any():
                raise RuntimeError(f"sub-envs {np.flatnonzero(self._autoreset).tolist()} ended; reset them with "
                                   "options={'reset_mask': ...} before stepping (autoreset_mode=DISABLED)")
            results = self._step_many(list(range(n)), actions)
        else:  # SAME_STEP
            results = self._step_many(list(range(n)), actions)
        infos: dict[str, Any] = {}
        for i in range(n):
            obs, rewards[i], terminated[i], truncated[i], info = results[i]
            if self.autoreset_mode == AutoresetMode.SAME_STEP and (terminated[i] or truncated[i]):
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                _, info = self._reset_one(i, None)
            infos = self._add_info(infos, info, i)
        self._autoreset = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._autoreset[:] = False
        return self._observations(), rewards, terminated, truncated, infos

    def _observations(self) -> np.ndarray | dict[str, np.ndarray]:
        """uint8 [N, H, W, 3] (zeros for a sub-env never reset), or the dict of those and the goal frames."""
        c = self.model.config
        blank = np.zeros((c.frame_size, c.frame_size, c.channels), np.uint8)
        frames = np.stack([blank if d is None else d.frames[-1] for d in self._dreams])
        if not self.goal_conditioned:
            return frames
        return {OBSERVATION_KEY: frames,
                GOAL_KEY: np.stack([blank if d is None else d.observation(True)[GOAL_KEY] for d in self._dreams])}

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each sub-env's current frame, uint8 [H, W, 3], when ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array" or any(d is None for d in self._dreams):
            return None
        return tuple(d.frames[-1].copy() for d in self._dreams)

    def close_extras(self, **kwargs: Any) -> None:
        self.starts.close()

"""One recorded trajectory, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class EpisodeError(ValueError):
    """An episode's arrays are inconsistent (shape, dtype, length or non-finite values)."""


@dataclass(frozen=True, eq=False)
class Episode:
    """A trajectory of T steps from one environment.

    Attributes:
        frames: uint8 [T+1, H, W, 3]; frames[t] is the observation before actions[t].
        actions: float32 [T, A]; the action taken from frames[t].
        rewards: float32 [T]; reward after actions[t].
        terminated: bool [T].
        truncated: bool [T].
        goal_frame: uint8 [H, W, 3], or None for environments without a goal image.
        env_id: the Gymnasium id the episode came from.
        seed: the ``reset(seed=...)`` seed; it determines start and goal.
        policy: the name of the collection policy.
        success: bool [T] (``info["success"]`` after each step), or None when the env reports none.
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    goal_frame: np.ndarray | None
    env_id: str
    seed: int
    policy: str = "unknown"
    success: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        frames, actions = self.frames, self.actions
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise EpisodeError(f"frames must be uint8 [T+1, H, W, 3], got {_describe(frames)}")
        if not isinstance(actions, np.ndarray) or actions.dtype != np.float32 or actions.ndim != 2:
            raise EpisodeError(f"actions must be float32 [T, A], got {_describe(actions)}")
        steps = actions.shape[0]
        if steps < 1:
            raise EpisodeError("an episode needs at least one step")
        if frames.shape[0] != steps + 1:
            raise EpisodeError(f"frames must hold T+1 = {steps + 1} frames for T = {steps} actions, got {frames.shape[0]}")
        if not np.isfinite(actions).all():
            raise EpisodeError("actions contain NaN or inf")
        for name, dtype in (("rewards", np.float32), ("terminated", np.bool_), ("truncated", np.bool_)):
            _check_per_step(name, getattr(self, name), dtype, steps)
        if self.success is not None:
            _check_per_step("success", self.success, np.bool_, steps)
        if self.goal_frame is not None and (
            not isinstance(self.goal_frame, np.ndarray)
            or self.goal_frame.dtype != np.uint8
            or self.goal_frame.shape != frames.shape[1:]
        ):
            raise EpisodeError(f"goal_frame must be uint8 {list(frames.shape[1:])}, got {_describe(self.goal_frame)}")
        if not self.env_id:
            raise EpisodeError("env_id must be a non-empty string")

    @property
    def num_steps(self) -> int:
        """T, the number of actions."""
        return int(self.actions.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3)."""
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        """A."""
        return int(self.actions.shape[1])

    @property
    def reached_goal(self) -> bool | None:
        """Whether the task reported success at any step (None when it reports none)."""
        return None if self.success is None else bool(self.success.any())

    def equals(self, other: "Episode") -> bool:
        """True when every array and field is identical."""
        arrays = ("frames", "actions", "rewards", "terminated", "truncated", "goal_frame", "success")
        same_arrays = all(_same(getattr(self, a), getattr(other, a)) for a in arrays)
        return same_arrays and (self.env_id, self.seed, self.policy) == (other.env_id, other.seed, other.policy)


def _check_per_step(name: str, value: np.ndarray, dtype: type, steps: int) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != (steps,):
        raise EpisodeError(f"{name} must be {np.dtype(dtype).name} [{steps}], got {_describe(value)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise EpisodeError(f"{name} contain NaN or inf")


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__

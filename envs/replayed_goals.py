"""Goal images from recorded episodes, for envs that have none of their own (Gymnasium's MuJoCo envs).

``ReplayedGoals`` wraps a pixel env (``worldvid.envs.factory.make_pixel_env``) of a Gymnasium MuJoCo env and a
few recorded episodes of it (``GoalSource``: the seed each was reset with, its actions and frames). A reset picks
an episode and a start step t0, replays the episode's first t0 actions from its seed (MuJoCo is deterministic, so
the env is then in the recorded state; a replay that does not reproduce the recorded frame raises), and sets the
goal to the recorded frame ``goal_steps`` later: DINO-WM's "N-step goal" set, with goals a policy is known to
reach in N steps. Success is judged on the state, not the frame: every body within ``tolerance`` (world units,
metres for Gymnasium's envs) of where it is in the goal state, which the reset reaches by replaying on
(``info["state_distance"]``: the largest body distance). The reset info also carries the recorded frames and
actions up to t0 (``past_frames``, ``past_actions``), so a planner's history starts with the motion it came with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from worldvid.envs.factory import sim_state_io
from worldvid.envs.goal_conditioned import success_info

REPLAY_TOLERANCE = 1.0
"""Largest mean |difference| (grey levels, 0-255) between a replayed frame and the recorded one."""


@dataclass(frozen=True)
class GoalSource:
    """One recorded episode: ``seed`` it was reset with, ``actions`` float32 [T, A], ``frames`` uint8 [T + 1, H, W, 3]."""

    seed: int
    actions: np.ndarray
    frames: np.ndarray

    @property
    def steps(self) -> int:
        return int(len(self.actions))


class ReplayedGoals(gym.Wrapper):
    """A MuJoCo pixel env whose episodes start inside recorded episodes and aim at their frames ``goal_steps`` on.

    ``reset(seed=s)`` uses source ``s % len(sources)`` and a start step t0 drawn from ``s``, uniform over the
    steps with a goal ahead. An episode ends (truncated) after ``max_steps`` steps (default ``2 * goal_steps``)
    or when the inner env ends. ``info``: ``goal_frame``, ``success``/``is_success``, ``state_distance`` at every
    step; ``start_step`` and ``source`` at reset.
    """

    def __init__(self, env: gym.Env, sources: Sequence[GoalSource], goal_steps: int = 10,
                 tolerance: float = 0.02, max_steps: int | None = None) -> None:
        super().__init__(env)
        io = sim_state_io(env)
        if io is None or not hasattr(env.unwrapped, "data"):
            raise ValueError(f"goals replayed from episodes need a Gymnasium MuJoCo env (set_state), got {env}")
        self._save_state, self._restore_state = io
        if goal_steps < 1 or not tolerance > 0 or (max_steps is not None and max_steps < 1):
            raise ValueError(f"goal_steps and max_steps must be >= 1 and tolerance > 0, got {goal_steps}, "
                             f"{max_steps}, {tolerance}")
        self.sources = [s for s in sources if s.steps >= goal_steps]
        if not self.sources:
            raise ValueError(f"no recorded episode has the {goal_steps} steps a goal needs")
        self.goal_steps, self.tolerance = int(goal_steps), float(tolerance)
        self.max_steps = int(max_steps or 2 * goal_steps)
        self.goal_frame: np.ndarray | None = None
        self._goal_positions: np.ndarray | None = None
        self._t = 0

    # --- the simulator state, as the oracle reads and writes it -----------------------------------------------
    def get_sim_state(self) -> Any:
        """A copy of the simulator state (``worldvid.envs.factory.sim_state_io``: qpos and qvel)."""
        return self._save_state()

    def set_sim_state(self, state: Any) -> None:
        """Restore a ``get_sim_state()``."""
        self._restore_state(state)

    def simulate(self, action: np.ndarray) -> None:
        """One step of the inner env's physics, outside its time limit and without rendering."""
        self.env.unwrapped.step(np.asarray(action, np.float32))

    def render_observation(self) -> np.ndarray:
        """The current frame, uint8 [H, W, 3], as observations show it."""
        return self.env.observation(None)

    def body_positions(self) -> np.ndarray:
        """float [bodies - 1, 3]: world positions of every body but the world."""
        return self.env.unwrapped.data.xpos[1:].copy()

    # --- episodes ---------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        s = 0 if seed is None else int(seed)
        index = s % len(self.sources)
        source = self.sources[index]
        start = int(np.random.default_rng([s, 11]).integers(0, source.steps - self.goal_steps + 1))
        self.env.reset(seed=source.seed, options=options)
        self._replay(source, 0, start)
        state = self.get_sim_state()
        self._replay(source, start, start + self.goal_steps)
        self._goal_positions = self.body_positions()
        self.goal_frame = source.frames[start + self.goal_steps].copy()
        self.set_sim_state(state)
        self._t = 0
        observation = self.render_observation()
        info = self._info()
        info.update(start_step=start, source=index, past_frames=source.frames[:start + 1].copy(),
                    past_actions=np.asarray(source.actions[:start], np.float32).copy())
        return observation, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        observation, reward, terminated, truncated, _ = self.env.step(action)
        self._t += 1
        info = self._info()
        return observation, float(reward), bool(terminated), bool(truncated or self._t >= self.max_steps), info

    def _info(self) -> dict[str, Any]:
        distance = float(np.linalg.norm(self.body_positions() - self._goal_positions, axis=-1).max())
        return {"goal_frame": self.goal_frame, "state_distance": distance,
                **success_info(distance <= self.tolerance)}

    def _replay(self, source: GoalSource, begin: int, end: int) -> None:
        """Run the source's actions ``begin..end-1`` and check the frame reached against the recorded one."""
        for action in source.actions[begin:end]:
            self.simulate(action)
        frame = self.render_observation()
        difference = float(np.abs(frame.astype(np.float64) - source.frames[end]).mean())
        if difference > REPLAY_TOLERANCE:
            raise ValueError(f"the recorded episode of seed {source.seed} does not replay: at step {end} the frame "
                             f"differs by {difference:.2f} grey levels on average (the env or its camera changed?)")

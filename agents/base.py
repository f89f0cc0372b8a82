"""Planner protocol, the imagination (``Dynamics``) interface, and the sampling loop every planner shares.

Time convention (the world model's): a[t] is the action taken from frame f[t]. At decision time t a planner
sees a ``History``: frames f[t-K+1..t] and the actions a[t-K..t-1] executed before them, exactly the context
``WorldModel.rollout`` needs. A ``Dynamics`` imagines, for N candidate action sequences a[t..t+H-1], the H
frames f[t+1..t+H] each would produce, all candidates of one planner iteration in one batched call.

``SamplingPlanner`` holds the loop shared by random shooting, CEM and MPPI: sample N candidates around a
Gaussian (mean, std) over [H, A] (warm-started from the previous plan shifted by the executed steps),
imagine them, score the videos against the goal frame, update (mean, std), repeat ``iterations`` times.
The subclasses only differ in how they sample and update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from worldvid.agents.planner_config import PlannerConfig
from worldvid.costs import Cost, video_cost
from worldvid.windows import advance, start_window

# ---------------------------------------------------------------------------- data
@dataclass
class History:
    """What a planner sees at decision time t.

    frames: uint8 [K, H, W, 3] = f[t-K+1..t], oldest first; ``frames[-1]`` is the current observation.
    actions: float32 [K, A] = a[t-K..t-1], the action that led into each frame: the ``past_actions`` of
    ``worldvid.windows`` (before an episode's start the first frame is repeated and actions are zero).
    """

    frames: np.ndarray
    actions: np.ndarray

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"history frames must be uint8 [K, H, W, 3], got {self.frames.dtype} {self.frames.shape}")
        if self.actions.ndim != 2 or self.actions.shape[0] != self.frames.shape[0]:
            raise ValueError(f"history actions must be [K, A] with K = {self.frames.shape[0]}, "
                             f"got {self.actions.shape}")

    @classmethod
    def start(cls, frame: np.ndarray, context: int, action_dim: int) -> "History":
        """The history at t = 0: ``frame`` (uint8 [H, W, 3]) repeated ``context`` times, zero actions."""
        return cls(*start_window(frame, context, action_dim))

    def push(self, action: np.ndarray, frame: np.ndarray) -> "History":
        """The history after executing ``action`` (float [A]) from the current frame and observing ``frame``."""
        return History(*advance(self.frames, self.actions, action, frame))

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the frames."""
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]


@dataclass
class Plan:
    """One decision's result.

    actions: float32 [H, A], the plan from now on (an MPC loop executes the first k).
    imagined: uint8 [T, h, w, 3], the imagined video of the best-scoring candidate (None without a model), T = horizon x
    action_repeat + settle.
    cost: that candidate's video cost. model_calls: batched imagination calls made. seconds: wall time.
    """

    actions: np.ndarray
    imagined: np.ndarray | None
    cost: float
    model_calls: int
    seconds: float


@runtime_checkable
class Dynamics(Protocol):
    """Imagines the videos of candidate action sequences from a history.

    ``calls`` counts batched ``imagine`` calls (one per planner iteration); ``reset(seed)`` makes the
    imagination of one episode reproducible. A dynamics may also offer ``imagine_last(history, actions)`` ->
    uint8 [N, 1, h, w, 3], the frames the candidates end in without those between (the simulator does): planners
    scoring only the last frame then call it, and ``imagine`` once for the chosen candidate's video.
    """

    calls: int

    def reset(self, seed: int) -> None: ...

    def imagine(self, history: History, actions: Tensor) -> Tensor:
        """actions float32 [N, H, A] (a[t..t+H-1] per candidate) -> uint8 [N, H, h, w, 3] = f[t+1..t+H]."""
        ...


@runtime_checkable
class Planner(Protocol):
    """Chooses actions from a history and a goal image."""

    def reset(self, seed: int | None = None) -> None:
        """Forget the previous episode (warm start) and reseed."""
        ...

    def act(self, history: History, goal_frame: np.ndarray) -> np.ndarray:
        """The next action, float32 [A], for ``history`` and goal uint8 [H, W, 3]."""
        ...


# ---------------------------------------------------------------------------- one search, step by step
@dataclass
class Imagine:
    """What a planner's search asks for: ``dynamics`` imagines the candidates ``actions`` float32 [N, T, A] from
    ``history``; last_only: only the frame each candidate ends in (``imagine_last``, uint8 [N, 1, h, w, 3])."""

    dynamics: Dynamics
    history: History
    actions: Tensor
    last_only: bool = False

    def run(self) -> Tensor:
        """The frames asked for, from this request's dynamics alone: uint8 [N, T (1 if last_only), h, w, 3]."""
        if self.last_only:
            return self.dynamics.imagine_last(self.history, self.actions)  # type: ignore[attr-defined]
        return self.dynamics.imagine(self.history, self.actions)


Search = Generator[Imagine, Tensor, "Plan"]
"""One decision's search as a generator: it yields each ``Imagine`` it needs, is sent the frames, returns the
``Plan``. ``run_search`` answers it alone; ``worldvid.agents.lockstep.plan_together`` answers several at once."""


def run_search(search: Search) -> Plan:
    """Drive one search to its ``Plan``, answering each request with its own dynamics."""
    try:
        request = next(search)
        while True:
            request = search.send(request.run())
    except StopIteration as done:
        return done.value


# ---------------------------------------------------------------------------- shared planner loop
@dataclass
class SearchState:
    """One decision's search: the sampling distribution (mean, std float32 [H, A]) and the best candidate
    so far (actions [H, A], imagined frames [H, h, w, 3], cost)."""

    mean: Tensor
    std: Tensor
    best_actions: Tensor | None = None
    best_frames: Tensor | None = None
    best_cost: float = float("inf")


class SamplingPlanner:
    """Sample, imagine, score, update: the loop shared by random shooting, CEM and MPPI.

    Subclasses override ``_sample`` (how candidates are drawn) and ``_update`` (how the distribution moves)
    and may override ``_result`` (which action sequence is executed). Actions are float32 in the box
    [low, high] (the env's action space). Reproducible: one ``torch.Generator`` draws every candidate.
    """

    name = "sampling"

    def __init__(self, dynamics: Dynamics, cost: Cost, action_low: np.ndarray, action_high: np.ndarray,
                 config: PlannerConfig = PlannerConfig(), seed: int = 0) -> None:
        self.dynamics, self.cost, self.config = dynamics, cost, config
        self.low = torch.as_tensor(np.asarray(action_low, np.float32))
        self.high = torch.as_tensor(np.asarray(action_high, np.float32))
        if self.low.ndim != 1 or self.low.shape != self.high.shape or not bool((self.high > self.low).all()):
            raise ValueError(f"action bounds must be [A] arrays with high > low, got {action_low} .. {action_high}")
        self.generator = torch.Generator()
        self._previous: Tensor | None = None
        self.reset(seed)

    @property
    def action_dim(self) -> int:
        return int(self.low.shape[0])

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start; reseed the sampling (and the dynamics' imagination) if ``seed`` is given."""
        self._previous = None
        if seed is not None:
            self.generator.manual_seed(int(seed))
            self.dynamics.reset(int(seed) + 1)

    def act(self, history: History, goal_frame: np.ndarray) -> np.ndarray:
        """The first action of a fresh plan, float32 [A] (assumes one action is executed per call)."""
        return self.plan(history, goal_frame, shift=1).actions[0]

    def plan(self, history: History, goal_frame: np.ndarray, shift: int = 1, remaining: int | None = None) -> Plan:
        """Search for the best action sequence from ``history`` toward ``goal_frame`` (uint8 [H, W, 3]).

        shift: env steps executed since the previous plan (its warm start is shifted by shift // action_repeat
        planned actions: execute a multiple of ``action_repeat`` to keep it aligned). remaining: env steps left in
        the episode (None: no limit); read only with ``config.shrink_horizon``.
        Returns a ``Plan``: actions float32 [horizon x action_repeat, A] (each planned action repeated), the best
        candidate's imagined video, its cost, the imagination calls made (``iterations``) and the wall time.
        """
        return run_search(self.search(history, goal_frame, shift, remaining))

    def search(self, history: History, goal_frame: np.ndarray, shift: int = 1, remaining: int | None = None) -> Search:
        """``plan`` as a generator (``Search``): yields each imagination it needs instead of making it, so that
        several episodes' searches can share one batched rollout (``worldvid.agents.lockstep``)."""
        goal = np.asarray(goal_frame)
        if goal.dtype != np.uint8 or goal.shape != history.frame_shape:
            raise ValueError(f"goal frame must be uint8 {history.frame_shape} like the observations, "
                             f"got {goal.dtype} {goal.shape}")
        if history.actions.shape[1] != self.action_dim:
            raise ValueError(f"history actions have {history.actions.shape[1]} dims, the planner {self.action_dim}")
        start, calls = time.perf_counter(), self.dynamics.calls
        c = self.config
        if remaining is not None and remaining < 1:
            raise ValueError(f"remaining must be a positive number of env steps, got {remaining}")
        steps_left = remaining if c.shrink_horizon else None
        state = SearchState(*self._initial(shift // c.action_repeat))
        # Dynamics that can skip the frames in between (the simulator) render only where a 'final' cost looks;
        # the chosen candidate's whole video is imagined once at the end.
        last_only = c.reduce == "final" and hasattr(self.dynamics, "imagine_last")
        kept: tuple[Tensor, Tensor] | None = None  # iCEM: the last iteration's best (candidates, costs)
        warm: tuple[Tensor, Tensor, float] | None = None  # the shifted previous plan: (actions, frames, cost)
        warmed = c.warm_start and self._previous is not None
        # commit_margin and stall_rounds judge plans by their gain on doing nothing: a candidate of no action
        judged = (c.commit_margin > 0 or c.stall_rounds > 0) and int(warmed) < c.population(0)
        idle_slot = int(warmed) if judged else None
        idle, rounds, restarts, iteration = float("nan"), c.iterations, 0, 0
        while iteration < rounds:
            candidates = self._sample(state, iteration % c.iterations, c.population(iteration % c.iterations))
            if iteration == 0 and warmed:
                candidates[0] = state.mean  # keep the shifted previous plan in the running
            if iteration == 0 and idle_slot is not None:
                candidates[idle_slot] = self._rest
            frames = yield Imagine(self.dynamics, history, self._sequences(candidates, steps_left), last_only)
            costs = video_cost(self.cost, frames, goal, c.reduce, c.discount).float().cpu()
            costs = torch.nan_to_num(costs, nan=float("inf"))
            if iteration == 0:
                warm = (candidates[0].clone(), frames[0], float(costs[0])) if warmed else None
                idle = float(costs[idle_slot]) if idle_slot is not None else idle
            best = int(costs.argmin())
            if float(costs[best]) < state.best_cost:
                state.best_cost = float(costs[best])
                state.best_actions = candidates[best].clone()
                state.best_frames = frames[best]
            if kept is not None:
                candidates, costs = torch.cat([kept[0], candidates]), torch.cat([kept[1], costs])
            if c.keep_elites:
                top = torch.topk(costs, min(c.keep_elites, costs.shape[0]), largest=False).indices
                kept = (candidates[top], costs[top])
            self._update(state, candidates, costs)
            iteration += 1
            if iteration == rounds and restarts < c.stall_rounds and state.best_actions is not None and \
                    idle - state.best_cost < c.stall_gain * abs(idle):
                restarts, rounds = restarts + 1, rounds + c.iterations  # stalled: search again, widely
                state.mean, state.std = state.best_actions.clone(), torch.full_like(state.std, c.init_std)
        if c.commit_margin > 0 and warm is not None and idle - warm[2] > 0 and \
                idle - state.best_cost <= (1.0 + c.commit_margin) * (idle - warm[2]):
            state.best_actions, state.best_frames, state.best_cost = warm  # no clear gain: keep the plan
        actions = self._result(state)
        self._previous = actions.clone()
        if last_only and state.best_actions is not None:
            sequence = self._sequences(state.best_actions[None], steps_left)
            state.best_frames = (yield Imagine(self.dynamics, history, sequence))[0]
        imagined = None if state.best_frames is None else state.best_frames.cpu().numpy()
        executed = actions.repeat_interleave(c.action_repeat, dim=0)
        return Plan(executed.numpy().astype(np.float32), imagined, state.best_cost,
                    self.dynamics.calls - calls, time.perf_counter() - start)

    def _sequences(self, candidates: Tensor, steps_left: int | None = None) -> Tensor:
        """What is imagined for candidates [N, H, A]: each action held ``action_repeat`` steps, then ``settle`` steps of
        no action: float32 [N, H x action_repeat + settle, A]. steps_left: env steps left in the episode; the held
        actions after them are replaced by no action."""
        held = candidates.repeat_interleave(self.config.action_repeat, dim=1)
        moving = held.shape[1] if steps_left is None else min(steps_left, held.shape[1])
        resting = held.shape[1] - moving + self.config.settle
        if not resting:
            return held
        return torch.cat([held[:, :moving], self._rest.expand(len(held), resting, -1)], dim=1)

    @property
    def _rest(self) -> Tensor:
        """No action, float32 [A]: zero clipped to the action box."""
        return torch.zeros(self.action_dim).clamp(self.low, self.high)

    # ----------------------------------------------------------------- hooks
    def _initial(self, shift: int) -> tuple[Tensor, Tensor]:
        """The first round's (mean, std) [H, A]: the previous plan shifted by ``shift`` planned actions (filled at the
        end as ``warm_tail`` says), or zeros; std ``init_std`` in both cases."""
        c = self.config
        mean = torch.zeros(c.horizon, self.action_dim)
        if c.warm_start and self._previous is not None:
            shift = min(max(int(shift), 0), c.horizon)
            kept = self._previous[shift:]
            last = self._previous[-1:] if c.warm_tail == "repeat" else torch.zeros_like(self._previous[-1:])
            tail = last.expand(c.horizon - kept.shape[0], -1)
            mean = torch.cat([kept, tail]) if shift else self._previous.clone()
        return mean, torch.full((c.horizon, self.action_dim), c.init_std)

    def _noise(self, count: int) -> Tensor:
        """Standard normal noise [count, H, A], AR(1)-correlated along H with unit marginal variance."""
        c = self.config
        eps = torch.randn(count, c.horizon, self.action_dim, generator=self.generator)
        beta = c.noise_correlation
        if beta > 0:
            scale = (1.0 - beta**2) ** 0.5
            for h in range(1, c.horizon):
                eps[:, h] = beta * eps[:, h - 1] + scale * eps[:, h]
        return eps

    def _sample(self, state: SearchState, iteration: int, count: int) -> Tensor:
        """``count`` candidates float32 [count, H, A] in the action box: Gaussian around (mean, std), clipped."""
        candidates = state.mean + state.std * self._noise(count)
        return torch.maximum(torch.minimum(candidates, self.high), self.low)

    def _update(self, state: SearchState, candidates: Tensor, costs: Tensor) -> None:
        """Move (state.mean, state.std) given candidates [N, H, A] and their costs [N]; default: keep them."""

    def _result(self, state: SearchState) -> Tensor:
        """The action sequence [H, A] to execute: by default the best-scoring candidate seen."""
        return state.best_actions if state.best_actions is not None else state.mean

    def _smooth(self, old: Tensor, new: Tensor) -> Tensor:
        a = self.config.smoothing
        return a * old + (1.0 - a) * new

"""Lockstep planning: the decisions of several episodes searched at once, their imaginations batched.

Each episode keeps its own planner, warm start, sampling generator and imagination generator; only the arithmetic
is shared. In every round the pending requests of all searches are answered together: those of
``WorldModelDynamics`` that share a model, ``num_steps`` and length T in one rollout (B episodes x N candidates
rows), the others (the simulator) one by one. An episode's plans therefore equal those it gets alone up to the
rounding of batched arithmetic (``tests/test_lockstep.py`` states the tolerance), and episodes/s per core rise
because the denoiser runs on larger batches.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from torch import Tensor

from worldvid.agents.base import History, Imagine, Plan, Search, run_search
from worldvid.agents.world_model_dynamics import imagine_together


def search_of(planner: object, history: History, goal_frame: np.ndarray, shift: int,
              remaining: int | None = None) -> Search:
    """The planner's ``search`` for this decision (``remaining``: env steps left in the episode); a planner without
    one (``RandomPlanner``) plans at once."""
    search = getattr(planner, "search", None)
    if search is not None:
        return search(history, goal_frame, shift, remaining)
    return _immediate(planner, history, goal_frame, shift, remaining)


def _immediate(planner: object, history: History, goal_frame: np.ndarray, shift: int,
               remaining: int | None) -> Search:
    return planner.plan(history, goal_frame, shift=shift, remaining=remaining)  # type: ignore[attr-defined]
    yield  # a generator that asks for nothing


def _batch_key(request: Imagine) -> Hashable | None:
    """Requests with one key share a rollout; None: answered alone."""
    key = getattr(request.dynamics, "batch_key", None)
    if request.last_only or key is None:
        return None
    return key(), tuple(request.actions.shape[1:])


def plan_together(searches: Sequence[Search]) -> list[Plan]:
    """Drive several searches (one decision of each of several episodes) to their ``Plan``s, in order.

    Each round answers every pending request: world-model requests sharing a model, num_steps and length T in one
    batched rollout (``imagine_together``), the others alone. With one search this is ``run_search``."""
    if len(searches) == 1:
        return [run_search(searches[0])]
    plans: list[Plan | None] = [None] * len(searches)
    pending: dict[int, Imagine] = {}

    def advance(index: int, frames: Tensor | None) -> None:
        try:
            search = searches[index]
            pending[index] = next(search) if frames is None else search.send(frames)
        except StopIteration as done:
            pending.pop(index, None)
            plans[index] = done.value

    for index in range(len(searches)):
        advance(index, None)
    while pending:
        groups: dict[Hashable, list[int]] = {}
        answers: dict[int, Tensor] = {}
        for index, request in pending.items():
            key = _batch_key(request)
            if key is None:
                answers[index] = request.run()
            else:
                groups.setdefault(key, []).append(index)
        for members in groups.values():
            answers.update(zip(members, imagine_together([pending[i] for i in members])))
        for index, frames in answers.items():
            advance(index, frames)
    return plans  # type: ignore[return-value]

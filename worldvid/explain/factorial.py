"""What a prediction takes from the frames, what from the actions: a 2x2 factorial decomposition.

A world model predicts f(C, A) from context frames C and actions A. Against baselines C0 (every context frame
replaced by a static copy of the last one: the scene as it is now, without its history) and A0 (every action
replaced by zeros, or by the data's mean action), four cells are imagined with the same sampling noise:

    change      = f(C, A)  - f(C0, A0)                         the predicted change the explanation divides
    frames      = f(C, A0) - f(C0, A0)                         the history of frames alone
    actions     = f(C0, A) - f(C0, A0)                         the actions alone
    interaction = f(C, A) - f(C, A0) - f(C0, A) + f(C0, A0)    what needs both

so that frames + actions + interaction = change exactly. A term's *share* is its projection on the change,
<term, change> / |change|^2: the shares sum to 1 (a share can be negative: a term that works against the
change, e.g. two modalities that carry the same velocity). Over many windows the shares are pooled as
sum <term, change> / sum |change|^2 (windows with a larger change weigh more; a window with no change cannot
divide by zero), with a bootstrap interval over windows.

For an open-loop rollout the cells are rolled out T steps with A = (past actions, future actions) and the same
noise per step, and each step t gets its own decomposition of f_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

RolloutFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(context float [B, K, C, H, W] in [-1, 1], past_actions float [B, K, A], actions float [B, T, A],
noise float [B, T, C, H, W]) -> imagined frames float [B, T, C, H, W]; the noise fixes every random draw."""

TERMS = ("frames", "actions", "interaction")
ACTION_BASELINES = ("zeros", "mean")
"""The action baselines A0: no action, or the data's mean action."""


def static_context(context: Tensor) -> Tensor:
    """The context baseline C0: every frame replaced by the last one. context float [B, K, C, H, W] -> same shape."""
    return context[:, -1:].expand_as(context).clone()


def action_baseline(actions: Tensor, kind: str = "zeros", mean: Tensor | None = None) -> Tensor:
    """The action baseline A0 of ``actions`` float [B, T, A]: zeros, or ``mean`` float [A] (the data's mean action)
    at every step. Same shape as ``actions``."""
    if kind == "zeros":
        return torch.zeros_like(actions)
    if kind == "mean":
        if mean is None or tuple(mean.shape) != (actions.shape[-1],):
            raise ValueError(f"the 'mean' action baseline needs the mean action float [{actions.shape[-1]}]")
        return mean.to(actions).expand_as(actions).clone()
    raise ValueError(f"unknown action baseline {kind!r}; choose from {', '.join(ACTION_BASELINES)}")


@dataclass
class Cells:
    """The four imagined cells, float [B, T, C, H, W] each: f(C, A), f(C, A0), f(C0, A), f(C0, A0)."""

    full: Tensor
    frames_only: Tensor
    actions_only: Tensor
    neither: Tensor

    def terms(self) -> dict[str, Tensor]:
        """The change and its three terms, float [B, T, C, H, W] each; frames + actions + interaction == change."""
        return {
            "change": self.full - self.neither,
            "frames": self.frames_only - self.neither,
            "actions": self.actions_only - self.neither,
            "interaction": self.full - self.frames_only - self.actions_only + self.neither,
        }


def imagine_cells(rollout: RolloutFn, context: Tensor, past_actions: Tensor, actions: Tensor, noise: Tensor,
                  context_base: Tensor, past_base: Tensor, actions_base: Tensor) -> Cells:
    """Imagine the four cells in one batched call of ``rollout`` (4B rows), every cell with the same ``noise``.

    context, context_base: float [B, K, C, H, W]; past_actions, past_base: float [B, K, A]; actions, actions_base:
    float [B, T, A]; noise: float [B, T, C, H, W]. Returns ``Cells`` of float [B, T, C, H, W].
    """
    out = rollout(
        torch.cat([context, context, context_base, context_base]),
        torch.cat([past_actions, past_base, past_actions, past_base]),
        torch.cat([actions, actions_base, actions, actions_base]),
        noise.repeat(4, *([1] * (noise.ndim - 1))),
    )
    full, frames_only, actions_only, neither = out.chunk(4)
    return Cells(full, frames_only, actions_only, neither)


@dataclass
class Projections:
    """Per window and step: <term, change> for each term and |change|^2, float64 [N, T] each."""

    frames: np.ndarray
    actions: np.ndarray
    interaction: np.ndarray
    change_sq: np.ndarray

    @classmethod
    def of(cls, cells: Cells) -> "Projections":
        """Project the terms of ``cells`` (float [B, T, C, H, W]) on their change."""
        exact = Cells(*(getattr(cells, f).double() for f in ("full", "frames_only", "actions_only", "neither")))
        terms = {k: v.flatten(2) for k, v in exact.terms().items()}
        change = terms["change"]
        return cls(*(((terms[k] * change).sum(-1)).cpu().numpy() for k in TERMS),
                   (change * change).sum(-1).cpu().numpy())

    @classmethod
    def concat(cls, parts: list["Projections"]) -> "Projections":
        """The windows of several batches in order."""
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in (*TERMS, "change_sq")))

    def shares(self, steps: slice | int | None = None, windows: np.ndarray | None = None) -> dict[str, float]:
        """Pooled shares {term: sum <term, change> / sum |change|^2} over ``windows`` (indices; default all) and
        ``steps`` (default all); NaN when nothing changed."""
        pick = (slice(None) if windows is None else windows, slice(None) if steps is None else steps)
        total = float(np.sum(self.change_sq[pick]))
        return {k: (float(np.sum(getattr(self, k)[pick])) / total if total > 0 else float("nan")) for k in TERMS}

    def per_window(self, step: int = 0) -> dict[str, np.ndarray]:
        """Each window's own shares at ``step`` (float64 [N]; NaN where the window's change is 0)."""
        denominator = np.where(self.change_sq[:, step] > 0, self.change_sq[:, step], np.nan)
        return {k: getattr(self, k)[:, step] / denominator for k in TERMS}


def bootstrap_shares(projections: Projections, steps: slice | int | None = None, resamples: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """{term: {"share", "low", "high"}}: the pooled share and its percentile bootstrap interval at ``level``,
    resampling windows with replacement (``resamples`` times, seeded)."""
    n = projections.change_sq.shape[0]
    point = projections.shares(steps)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in TERMS}
    for _ in range(resamples):
        sample = projections.shares(steps, rng.integers(0, n, n))
        for k in TERMS:
            draws[k].append(sample[k])
    tail = (1 - level) / 2 * 100
    out = {}
    for k in TERMS:
        values = np.asarray(draws[k])
        values = values[np.isfinite(values)]
        low, high = (np.percentile(values, [tail, 100 - tail]) if len(values) else (float("nan"),) * 2)
        out[k] = {"share": point[k], "low": float(low), "high": float(high)}
    return out

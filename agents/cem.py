"""Cross-entropy method (Rubinstein 1999; as in PlaNet): refit a Gaussian to the elite candidates."""

from __future__ import annotations

import torch
from torch import Tensor

from worldvid.agents.base import SamplingPlanner, SearchState


class CEMPlanner(SamplingPlanner):
    """Each iteration fits mean and std [H, A] to the ``elites`` lowest-cost candidates, smoothed with the old
    ones (``smoothing``), std floored at ``min_std``. Executes the best candidate imagined (so the executed
    plan is one whose video was scored). Warm start: the previous plan shifted by the executed steps."""

    name = "cem"

    def _update(self, state: SearchState, candidates: Tensor, costs: Tensor) -> None:
        elite = candidates[torch.topk(costs, self.config.elites, largest=False).indices]
        state.mean = self._smooth(state.mean, elite.mean(0))
        std = elite.std(0, unbiased=False) if elite.shape[0] > 1 else torch.zeros_like(state.std)
        state.std = self._smooth(state.std, std).clamp_min(self.config.min_std)

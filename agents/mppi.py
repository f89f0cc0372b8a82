"""Model-predictive path integral control (Williams et al. 2017; as in TD-MPC): a cost-weighted mean."""

from __future__ import annotations

import torch
from torch import Tensor

from worldvid.agents.base import SamplingPlanner, SearchState


class MPPIPlanner(SamplingPlanner):
    """Each iteration weights candidates by softmax(-c / temperature), costs normalised to [0, 1] within the
    iteration (so one temperature suits every cost's scale); mean and std [H, A] become the weighted mean and
    std, smoothed with the old ones. Executes the final weighted mean; the plan's imagined video is that of
    the best candidate seen (the mean itself is not imagined). Warm start: previous plan, shifted."""

    name = "mppi"

    def _update(self, state: SearchState, candidates: Tensor, costs: Tensor) -> None:
        finite = torch.isfinite(costs)
        if not bool(finite.any()):
            return
        low, high = costs[finite].min(), costs[finite].max()
        normalised = torch.where(finite, (costs - low) / (high - low).clamp_min(1e-12), torch.full_like(costs, 1e3))
        weights = torch.softmax(-normalised / self.config.temperature, 0)[:, None, None]
        mean = (weights * candidates).sum(0)
        std = ((weights * (candidates - mean) ** 2).sum(0)).sqrt()
        state.mean = self._smooth(state.mean, mean)
        state.std = self._smooth(state.std, std).clamp_min(self.config.min_std)

    def _result(self, state: SearchState) -> Tensor:
        return state.mean.clone()

"""How a predicted frame is scored against the real one in training: ``FrameLoss``.

Its distance ('mse' or 'l1', a regression model only for 'l1') and, opt-in, a weight on the pixels that move: a
scene's static background fills most of a frame and is easy, so a plain mean over pixels spends the loss there,
while what a world model is for (the pusher, the object it pushes) is a few pixels. ``moving_weight`` W counts each
pixel that changes from the last context frame to the real next frame (by more than 8 grey levels in any channel,
the moving-part mask of ``worldvid evaluate``) W times, every other pixel once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

REGRESSION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
"""What a regression model's prediction is trained to be: 'mse', the mean of the next frames the context and
actions leave possible; 'l1', their per-pixel median (a frame of the likelier outcome where it is one or another,
not an average of both)."""

MOVED_LEVEL = 2 * 8 / 255
"""A pixel moves where a channel changes by more than 8 grey levels: 2 * 8/255 in model space ([-1, 1])."""


@dataclass(frozen=True)
class FrameLoss:
    """The training loss of a predicted frame: ``distance`` ('mse' or 'l1', ``REGRESSION_LOSSES``) averaged over
    pixels, each pixel that moves weighted ``moving_weight`` times (1: the plain mean)."""

    distance: str = "mse"
    moving_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.distance not in REGRESSION_LOSSES:
            raise ValueError(f"regression_loss must be one of {list(REGRESSION_LOSSES)}, got {self.distance!r}")
        w = self.moving_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise ValueError(f"moving_weight must be a positive number (1: every pixel alike), got {w!r}")

    def check_objective(self, objective: str) -> None:
        """ValueError where the distance cannot apply: any but 'mse' with the diffusion objective (whose EDM loss
        is a mean squared error by construction)."""
        if self.distance != "mse" and objective != "regression":
            raise ValueError(f"regression_loss {self.distance!r} needs a regression model (objective 'regression'), "
                             f"this one is {objective!r}")

    def pixel_weights(self, next_frame: Tensor, last_frame: Tensor) -> Tensor | None:
        """float [B, 1, H, W]: ``moving_weight`` where any channel of ``next_frame`` differs from ``last_frame`` by
        more than ``MOVED_LEVEL``, 1 elsewhere; None when ``moving_weight`` is 1 (every pixel alike).
        next_frame, last_frame: float [B, C, H, W] in [-1, 1] (real frames, not predictions)."""
        if self.moving_weight == 1:
            return None
        moved = ((next_frame.float() - last_frame.float()).abs() > MOVED_LEVEL).any(dim=1, keepdim=True)
        return 1 + (self.moving_weight - 1) * moved.float()

    def __call__(self, predicted: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
        """The loss (float32 scalar) of ``predicted`` against ``target`` (float [B, C, H, W]): the distance's mean
        over pixels, or with ``weights`` (float [B, 1, H, W], ``pixel_weights``) its weighted mean."""
        distance = REGRESSION_LOSSES[self.distance]
        if weights is None:
            return distance(predicted, target)
        weights = weights.expand_as(predicted)
        return (distance(predicted, target, reduction="none") * weights).sum() / weights.sum()

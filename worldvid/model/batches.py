"""Checks of the tensors a world model is given: tensor type, and one batch size across its arguments."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_tensor(value: Tensor | np.ndarray, name: str) -> Tensor:
    """``value`` as a tensor (a numpy array shared, not copied where contiguous); TypeError naming ``name`` else."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def check_batch(*named: tuple[str, Tensor]) -> None:
    """ValueError listing every named tensor's batch size (dim 0) unless they are all equal."""
    sizes = {name: t.shape[0] for name, t in named}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {sizes}")


def broadcast_batch(*named: tuple[str, Tensor]) -> tuple[Tensor, ...]:
    """Expand batch-1 tensors to the common batch size B (one context, many candidates)."""
    sizes = {name: t.shape[0] for name, t in named}
    batch = max(sizes.values())
    if any(b not in (1, batch) for b in sizes.values()):
        raise ValueError(f"batch sizes differ and cannot be broadcast (only a batch of 1 is): {sizes}")
    return tuple(t.expand(batch, *t.shape[1:]) if t.shape[0] != batch else t for _, t in named)

"""How the processes of one training run share it: each one's rank, its share of every batch, its noise, and the
collectives among them (``Ranks``). The in-process run is rank 0 of 1, whose collectives are identities;
``worldvid.train_distributed`` gives the DDP ranks of a Ray Train run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from worldvid.checkpoint import set_rng_states
from worldvid.model.frame_loss import FrameLoss

if TYPE_CHECKING:
    from worldvid.model import WorldModel


RANK_SEED_STRIDE = 1 << 24
"""Noise seeds of rank r start r * RANK_SEED_STRIDE above rank 0's. torch seeds its CPU generator with the low 32
bits of a seed only, so the stride stays within them: up to 256 ranks, runs of up to 16.7M steps never share a
noise stream (a stride of 2**40 gave every rank rank 0's noise)."""


class Ranks:
    """The processes that share every batch of a run, and their collectives. This one is the in-process run:
    rank 0 of 1, whose collectives are identities (``worldvid.train_distributed`` has DDP's)."""

    rank: int = 0
    world: int = 1

    def loss(self, model: WorldModel, batch: dict[str, torch.Tensor], generator: torch.Generator,
             frame_loss: FrameLoss = FrameLoss()) -> torch.Tensor:
        """This rank's loss (float32 scalar) on its share of the batch (context uint8 [b, K, H, W, C], ...)."""
        return model.loss(*loss_arguments(batch, generator, frame_loss))

    def noise_seed(self, seed: int, step: int) -> int:
        """The seed of this rank's diffusion noise at ``step``: (seed, step, rank), rank 0 as in-process."""
        return seed * 7_919 + step + self.rank * RANK_SEED_STRIDE

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the ranks (every rank gets it)."""
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on rank 0 (other ranks get [])."""
        return [value]

    def restore_rng(self, state: dict[str, Any], run_dir: str | os.PathLike) -> None:
        """Set this process's RNGs to this rank's states in the checkpoint ``state``."""
        set_rng_states(state["rng"])


def loss_arguments(batch: dict[str, torch.Tensor], generator: torch.Generator,
                   frame_loss: FrameLoss = FrameLoss()) -> tuple[Any, ...]:
    """``WorldModel.loss``'s positional arguments for a ``FrameWindowDataset`` batch: context, context actions,
    target, generator, the unrolled windows' future frames and actions (None when not unrolled), and the
    frame loss."""
    return (batch["context"], batch["context_actions"], batch["target"], generator, batch.get("future_frames"),
            batch.get("future_actions"), frame_loss)


class RankShare(torch.utils.data.Sampler):
    """Rank ``rank``'s share of each global batch of ``batches``: indices rank, rank + world, ..."""

    def __init__(self, batches: torch.utils.data.Sampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.batches)


def check_workers(saved: dict[str, Any] | None, workers: int, run_dir: str | os.PathLike) -> None:
    """ValueError when a run being resumed (``saved``: its train_config.json) was trained on another number of
    data-parallel workers than ``workers`` (its RNG streams and checkpoint are per worker)."""
    if saved is not None and int(saved.get("workers", 1)) != workers:
        trained = saved.get("workers", 1)
        raise ValueError(f"cannot resume {run_dir} on {workers} workers: it was trained on {trained} (its checkpoint "
                         f"holds {trained} workers' RNG streams); resume it with --workers {trained}")

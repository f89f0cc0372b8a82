"""Atomic, resumable training checkpoints: model, EMA, optimizer, schedule, step and every RNG state."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldvid.atomic import write_bytes_atomic

TRAINING_STATE = "training_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or from another configuration."""


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, when present, CUDA) RNG states."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``rng_states``."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, state dicts, plain values) to RUN/training_state.pt atomically.

    The file is written under a temporary name, flushed and renamed, so a kill at any moment leaves
    either the previous checkpoint or the new one, never a half-written file.
    """
    buffer = io.BytesIO()
    torch.save({**state, "rng": rng_states()}, buffer)
    return write_bytes_atomic(Path(run_dir) / TRAINING_STATE, buffer.getvalue())


def load_training_state(run_dir: str | os.PathLike, restore_rng: bool = True) -> dict[str, Any]:
    """Read RUN/training_state.pt (and restore the RNG states it holds).

    Raises CheckpointError naming the file when it is missing or unreadable.
    """
    path = Path(run_dir) / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # torch reports a corrupt zip as RuntimeError
        raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from err
    if restore_rng:
        set_rng_states(state["rng"])
    return state

"""Atomic, resumable training checkpoints: model, EMA, optimizer, schedule, step and every RNG state.

Loading never executes code: ``training_state.pt`` is read with ``torch.load(weights_only=True)``, which builds
only tensors, state dicts and plain values. The RNG states are saved in that form too (NumPy's key as a tensor,
the rest as ints and floats), so new files need no allow-list; files written before that hold NumPy arrays and
load through a narrow allow-list of NumPy's array reconstruction and nothing else.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from worldvid.atomic import write_bytes_atomic

TRAINING_STATE = "training_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or from another configuration."""


def _legacy_numpy_globals() -> list[Any]:
    """What a checkpoint that pickled NumPy's RNG state (a uint32 array) needs, under NumPy 1 and 2 names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct,
            (_reconstruct, "numpy.core.multiarray._reconstruct"), (_reconstruct, "numpy._core.multiarray._reconstruct")]


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, when present, CUDA) RNG states, as tensors and plain values.

    python: {"version": int, "state": int64 [625], "gauss_next": float | None}; numpy: {"name": str,
    "key": int64 [624], "pos": int, "has_gauss": int, "cached_gaussian": float}; torch: uint8 [N];
    cuda: a list of uint8 tensors, one per device.
    """
    version, state, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"name": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``rng_states``; also takes the tuples of files written before it stored tensors."""
    python, numpy_state = states["python"], states["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"])
    random.setstate(python)
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["name"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
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


_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)",
                 "This file can still be loaded")
"""How the lines of torch's weights-only refusal that explain weights_only (not what was refused) begin."""


def _reason(err: BaseException) -> str:
    """One line of ``err``: for torch's weights-only refusal, the line that says what it refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, pickle.UnpicklingError):
        detail = [line.split("WeightsUnpickler error:")[-1].split(" Please use")[0].strip()  # never advise to allow it
                  for line in lines if not line.startswith(_TORCH_ADVICE)]
        lines = [line for line in detail if line] or lines
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"[:240]


def load_training_state(run_dir: str | os.PathLike, restore_rng: bool = True,
                        keys: Sequence[str] = ("model", "step")) -> dict[str, Any]:
    """Read RUN/training_state.pt (and restore the RNG states it holds); nothing in the file is executed.

    ``keys``: entries the state must hold. Raises CheckpointError naming the file when it is missing, corrupt,
    lacks an entry, or asks to build anything but tensors, state dicts and plain values.
    """
    path = Path(run_dir) / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} is missing")
    bad = f"checkpoint {path} is corrupt or not a worldvid checkpoint"
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    # weights_only refuses other globals with UnpicklingError; a damaged zip is a RuntimeError, a cut one EOFError
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{bad} ({_reason(err)})") from None
    missing = [key for key in dict.fromkeys((*keys, "step", "rng")) if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{bad} (no {', '.join(missing)} entry)")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"{bad} (step {state['step']!r} is not a count)")
    if restore_rng:
        try:
            set_rng_states(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise CheckpointError(f"{bad} (its RNG states cannot be restored: {_reason(err)})") from None
    return state


def load_states(state: dict[str, Any], modules: dict[str, Any], run_dir: str | os.PathLike) -> None:
    """Load each ``modules[key]`` (a module, optimizer or scheduler) from ``state[key]``; CheckpointError naming
    the checkpoint when one does not fit (another model's checkpoint)."""
    for key, module in modules.items():
        try:
            module.load_state_dict(state[key])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise CheckpointError(f"checkpoint {Path(run_dir) / TRAINING_STATE}: its {key} does not fit the run's "
                                  f"model ({detail})") from None

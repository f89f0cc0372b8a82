"""Checkpoint folders of a ``WorldModel`` (and of any module with a ``config.to_dict()``, e.g. the learned
goal distance): ``config.json`` + ``model.safetensors`` + a model card ``README.md`` (``worldvid.model.card``).

config.json names its class under ``_worldvid_class`` and the library under ``_library_name`` (format 2); format 1
wrote diffusers' ``_class_name``, which sent diffusers' loaders looking for a diffusers class of that name: such
folders still load. A card the user wrote (without ``worldvid.model.card.CARD_MARKER``) is kept, never replaced.

The weights carry a SHA-256 of every tensor in their metadata, so a corrupt file is refused by name; a folder
is replaced atomically: the new one is written and synced beside it (``.NAME.tmp-PID-*``), then swapped in by
two renames (``NAME -> .NAME.old-PID-*``, ``.NAME.tmp-PID-* -> NAME``). A kill between the two renames leaves no
NAME but two complete folders beside it: a reader then reads the new one (or the previous one) where it lies,
and the next save puts it back in place. Leftovers of writers that no longer run are removed by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from torch import Tensor

from worldvid.atomic import fsync_path
from worldvid.model.card import CARD_NAME, card_is_ours, model_card
from worldvid.model.config import WorldModelConfig
from worldvid.model.folder import (CHECKSUM_KEY, CLASS_KEY, CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, class_name_of,
                                   read_folder, recover_folder, remove_stale_leftovers, state_checksum)
from worldvid.version import __version__

Model = TypeVar("Model", bound=torch.nn.Module)

def save_folder(model: torch.nn.Module, path: str | os.PathLike, kind: str = "world model",
                repo_id: str | None = None) -> Path:
    """Write ``model``'s ``config.json`` + ``model.safetensors`` + model card ``README.md`` into folder ``path``,
    atomically; returns the path.

    The files are written to a temporary sibling folder that then replaces ``path`` by rename, so an
    existing checkpoint is never left half-overwritten. Other files already in ``path`` are carried over (a card
    the user wrote too). First a folder an interrupted save left is put back (``recover_folder``) and dead
    writers' leftovers removed. ``repo_id``: the Hub repo the card's usage example names (``worldvid.model.hub``).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot save a {kind} to {path}: it exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    remove_stale_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        config = {CLASS_KEY: type(model).__name__, "_library_name": "worldvid", "_worldvid_version": __version__,
                  "_format_version": FORMAT_VERSION, **model.config.to_dict()}
        _write_synced(tmp / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
        checksum = state_checksum(state)
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", CHECKSUM_KEY: checksum})
        fsync_path(tmp / WEIGHTS_NAME)
        replaced = [CONFIG_NAME, WEIGHTS_NAME]
        if not (path / CARD_NAME).is_file() or card_is_ours(path / CARD_NAME):
            _write_synced(tmp / CARD_NAME, model_card(model, path, checksum, repo_id).encode())
            replaced.append(CARD_NAME)
        if path.exists():
            for entry in path.iterdir():
                if entry.name not in replaced:
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, tmp / entry.name)
        fsync_path(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
            os.replace(path, old)  # onto the empty folder mkdtemp made; a kill from here to the next rename is
            os.replace(tmp, path)  # repaired by recover_folder, and readers read the new folder where it lies
            fsync_path(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_folder(path)  # a failure between the renames: the previous folder goes back
        raise
    return path


def load_state_checked(model: torch.nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike,
                       kind: str = "world-model") -> None:
    """Load ``state`` into ``model``; ValueError naming the folder when keys or shapes differ from its config."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        path = Path(path)
        raise ValueError(
            f"{kind} weights {path / WEIGHTS_NAME} do not match {path / CONFIG_NAME}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}")
    model.load_state_dict(state)


def load_folder(cls: type[Model], path: str | os.PathLike, *, autocast: bool | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                expect: Mapping[str, Any] | None = None, **used_with: Any) -> Model:
    """A ``cls`` model (on ``device``, the CPU by default; train mode) from a folder written by ``save_folder``.

    ``dtype``: the weights' dtype, float32 (None) or bfloat16, which runs under bf16 autocast (the network's
    float32 inputs meet bf16 weights only there). ``expect`` / ``used_with`` (frame_size, action_dim, context,
    env_id): what the model will be used with; a mismatch raises ValueError naming the field. A missing file
    raises FileNotFoundError and a corrupt one ValueError, each naming the file.
    """
    device = torch.device(device if device is not None else "cpu")
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"a world model loads as float32 or bfloat16, not {dtype} (autocast= sets the precision "
                         "it computes in)")
    no_bf16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()  # autocast would run fp16 there
    if dtype == torch.bfloat16 and (autocast is False or no_bf16):
        raise ValueError("bfloat16 weights need bf16 autocast: pass autocast=None or True on a device with bf16, "
                         "or dtype=torch.float32")
    data, state = read_folder(path)
    if class_name_of(data) not in (None, cls.__name__):
        raise ValueError(f"{path} holds a {class_name_of(data)}, not a {cls.__name__}")
    try:
        config = WorldModelConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid world-model config {Path(path) / CONFIG_NAME}: {e}") from e
    model = cls(config, autocast=autocast, channels_last=False)
    try:
        model.check_compatible(expect=expect, **used_with)
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from e
    load_state_checked(model, state, path)
    if dtype == torch.bfloat16:
        model.autocast = True
    return model.to(device=device, dtype=dtype)


def weights_dtype(dtype: torch.dtype | str | None, torch_dtype: torch.dtype | str | None = None) -> torch.dtype | None:
    """The dtype a ``from_pretrained`` call asks for: ``dtype`` or its older name ``torch_dtype`` (diffusers',
    transformers'), a torch.dtype or its name ("bfloat16", "torch.float32"); None or "auto": as saved."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} differ: pass one")
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return None if value == "auto" else value
    found = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"unknown dtype {value!r} (e.g. torch.float32, 'bfloat16')")
    return found


def _write_synced(file: Path, data: bytes) -> None:
    with open(file, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())



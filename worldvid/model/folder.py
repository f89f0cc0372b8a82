"""The files of a checkpoint folder (world model, goal distance): their names, reading them with the checksum
verified, and finding (or putting back) the folder an interrupted save left beside its place.

``worldvid.model.pretrained`` writes these folders; its docstring tells how a folder is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from worldvid.atomic import fsync_path
from worldvid.locks import pid_alive

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 2
CLASS_KEY = "_worldvid_class"
_OLD_CLASS_KEY = "_class_name"  # format 1: diffusers' key, which diffusers' loaders then tried to resolve
CHECKSUM_KEY = "worldvid_sha256"


def class_name_of(config: Mapping[str, Any]) -> str | None:
    """The class a saved config.json was written from (either format), None when it names none."""
    return config.get(CLASS_KEY, config.get(_OLD_CLASS_KEY))


def read_folder(path: str | os.PathLike, kind: str = "world-model") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config dict, weights on the CPU) of a folder written by ``save_folder``, checksum verified.

    A missing file raises FileNotFoundError and a corrupt one ValueError, each naming the file.
    """
    path = Path(path)
    for attempt in range(2):  # a leftover read while its writer renames it into place: read again from the place
        source = folder_to_read(path)
        if source is None:
            raise FileNotFoundError(f"no {kind} checkpoint folder at {path}" if not path.is_dir() else
                                    f"{kind} checkpoint {path} is missing {CONFIG_NAME} ({path / CONFIG_NAME})")
        try:
            return _read_files(source, kind)
        except FileNotFoundError:
            if source == path or attempt:
                raise
    raise AssertionError("unreachable")


def _read_files(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open

    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"{kind} checkpoint {path} is missing {file.name} ({file})")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt {kind} config {config_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"corrupt {kind} config {config_file}: expected a JSON object")
    try:
        with safe_open(str(weights_file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"corrupt {kind} weights {weights_file}: {e}") from e
    checksum = metadata.get(CHECKSUM_KEY)
    if checksum is not None and checksum != state_checksum(state):
        raise ValueError(f"corrupt {kind} weights {weights_file}: checksum mismatch")
    return data, state


def _leftovers(path: Path) -> list[Path]:
    """Folders an interrupted save into ``path`` may have left beside it: new ones (``.NAME.tmp-*``), newest
    first, then previous ones (``.NAME.old-*``), newest first."""
    if not path.parent.is_dir():
        return []
    found = [(entry.name.startswith(f".{path.name}.tmp-"), entry.stat().st_mtime_ns, entry)
             for entry in path.parent.iterdir()
             if entry.is_dir() and entry.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-"))]
    return [entry for _, _, entry in sorted(found, key=lambda item: item[:2], reverse=True)]


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole checkpoint (config and weights readable, checksum right)."""
    try:
        _read_files(folder, "checkpoint")
    except (OSError, ValueError):
        return False
    return True


def folder_to_read(path: str | os.PathLike) -> Path | None:
    """``path`` when it holds a config; when ``path`` is missing, the complete folder an interrupted save left
    beside it (the new one before the previous one); else None."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if path.exists():
        return None
    return next((folder for folder in _leftovers(path) if _complete(folder)), None)


def recover_folder(path: str | os.PathLike) -> bool:
    """When ``path`` is missing and an interrupted save left a complete folder beside it, rename that folder
    into place (the new one when complete, else the previous one); returns whether it did."""
    path = Path(path)
    source = folder_to_read(path)
    if source is None or source == path:
        return False
    try:
        os.replace(source, path)
    except OSError:  # another process put a folder back first (or the disk is read-only: readers still find it)
        return False
    fsync_path(path.parent)
    return True


def remove_stale_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` folders beside ``path`` whose writer no longer runs
    (all but a live writer's); returns what was removed. Call after ``recover_folder``."""
    removed = []
    for folder in _leftovers(Path(path)):
        match = re.search(r"\.(?:tmp|old)-(\d+)-", folder.name)
        if match and int(match.group(1)) != os.getpid() and pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def state_checksum(state: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a state dict's names, dtypes, shapes and bytes: what a weights file's metadata records."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

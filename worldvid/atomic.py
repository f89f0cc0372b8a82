"""Atomic file writes: write to a temporary name beside the target, flush to disk, then rename over it.

A reader (or a process killed mid-write) sees either the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np


TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")
"""The form of ``temporary_name``'s names, ``.NAME.tmp<pid>`` (group 1: the writer's pid)."""


def temporary_name(path: str | os.PathLike) -> Path:
    """A per-process temporary name beside ``path`` (hidden, ends in ``.tmp<pid>``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the files in ``folder`` named like ``temporary_name``'s whose writer no longer runs (or is this
    process, which is not writing them now: its writes clean up after themselves); returns what was removed."""
    from worldvid.locks import pid_alive

    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = TEMPORARY.match(entry.name)
        if match and entry.is_file() and (int(match.group(1)) == os.getpid() or not pid_alive(int(match.group(1)))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data (or a folder's entries, so that the renames inside it survive a power cut) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (the file fsynced before the rename, its folder after); returns the path."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 1) -> Path:
    """``data`` as JSON (UTF-8, trailing newline) written atomically to ``path``; returns the path."""
    return write_bytes_atomic(path, (json.dumps(data, indent=indent) + "\n").encode())


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` of ``arrays`` written atomically to ``path``; returns the path."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())

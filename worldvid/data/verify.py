"""Checking an episode store against its manifest: every shard's size, checksum and contents.

``check_store(root)`` returns a ``StoreReport`` listing what is wrong per shard (nothing is changed): the
manifest's schema and paths (``worldvid.data.manifest.read_manifest``), each listed shard's presence, byte size
and sha256, and that every episode the manifest lists is in its shard with arrays of the lengths and shapes
the manifest and spec say. A shard whose manifest entry predates recorded checksums is read in full instead,
so HDF5's per-chunk fletcher32 checksums catch a flipped byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from worldvid.data.manifest import (StoreError, StoreSpec, episode_group, file_digest, first_line, inside_store,
                                    is_temporary, read_manifest, shard_name)
from worldvid.data.shard import REQUIRED_ARRAYS, episode_arrays

_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)
"""What h5py raises on a damaged file or chunk (a failed fletcher32 check is an OSError)."""


@dataclass
class StoreReport:
    """What ``check_store`` found.

    Attributes:
        root: the store folder.
        shards: number of shards checked.
        episodes: number of episodes in shards found whole.
        problems: {shard index: what is wrong with it}; key None for the store as a whole (its manifest).
        unlisted: shard or temporary files the manifest does not list (an interrupted writer's; not an error:
            the next ``collect`` replaces or removes them, and no reader opens them).
    """

    root: Path
    shards: int = 0
    episodes: int = 0
    problems: dict[int | None, list[str]] = field(default_factory=dict)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def broken_shards(self) -> list[int]:
        """Indices of the shards with problems, ascending."""
        return sorted(k for k in self.problems if k is not None)

    def lines(self) -> list[str]:
        """One line per problem, each naming its file."""
        out = [f"{self.root}: {p}" for p in self.problems.get(None, [])]
        return out + [f"{self.root / shard_name(i)}: {p}" for i in self.broken_shards for p in self.problems[i]]

    def summary(self) -> str:
        """One line: ok with the counts, or how many shards are broken."""
        if None in self.problems:
            return f"broken: {self.root}: its manifest cannot be used"
        if self.problems:
            return f"broken: {self.root}: {len(self.broken_shards)} of {self.shards} shards"
        return f"ok: {self.root}: {self.episodes} episodes in {self.shards} shards"


def _check_episode(f: h5py.File, spec: StoreSpec, episode: int, steps: int, read: bool) -> list[str]:
    """Problems of episode ``episode`` (T = ``steps`` per the manifest) inside open shard ``f``; ``read``: every byte."""
    name = episode_group(episode)
    if name not in f:
        return [f"episode {episode} is missing from the file"]
    group = f[name]
    problems = []
    for key, (shape, dtype) in episode_arrays(spec, steps).items():
        if key not in group:
            if key in REQUIRED_ARRAYS:
                problems.append(f"episode {episode}: {key} is missing")
            continue
        data = group[key]
        if not isinstance(data, h5py.Dataset) or data.shape != tuple(shape) or data.dtype != dtype:
            found = f"{data.dtype} {list(data.shape)}" if isinstance(data, h5py.Dataset) else "not an array"
            problems.append(f"episode {episode}: {key} is {found}, expected {np.dtype(dtype).name} {list(shape)} "
                            f"(the manifest says T = {steps})")
        elif read:
            try:
                data[()]  # every chunk passes its fletcher32 check or raises
            except _READ_ERRORS as err:
                problems.append(f"episode {episode}: {key} cannot be read ({first_line(err)})")
    seed = group.attrs.get("seed")
    if seed is None or int(seed) != spec.seed + episode:
        problems.append(f"episode {episode}: seed {seed} where the spec says {spec.seed + episode}")
    return problems


def check_shard(root: Path, spec: StoreSpec, index: int, entry: dict[str, Any], full: bool = False) -> list[str]:
    """Problems of shard ``index`` (manifest entry ``entry``); empty when it is whole.

    Size and sha256 are compared with the entry; the file is then opened and every episode's arrays checked
    against the lengths the entry lists. ``full``, or an entry without a recorded sha256 (older stores),
    reads every byte too.
    """
    path = root / entry["file"]
    if not inside_store(root, entry["file"]):
        return [f"{entry['file']!r} leads outside the store folder"]
    if not path.is_file():
        return ["missing (the manifest lists it)"]
    size = path.stat().st_size
    if size != entry["bytes"]:
        return [f"truncated or changed: {size} bytes, the manifest says {entry['bytes']}"]
    if "sha256" in entry and file_digest(path)[1] != entry["sha256"]:
        return ["checksum mismatch: its bytes changed since it was written (sha256 differs from the manifest's)"]
    read = full or "sha256" not in entry
    try:
        with h5py.File(path, "r") as f:
            return [p for offset, steps in enumerate(entry["lengths"])
                    for p in _check_episode(f, spec, entry["first_episode"] + offset, steps, read)]
    except _READ_ERRORS as err:
        return [f"cannot be read as HDF5 ({first_line(err)})"]


def unlisted_files(root: Path, listed: Iterable[str]) -> list[str]:
    """Names in ``root`` that look like shards or a writer's temporaries but are not in ``listed``, sorted."""
    listed = set(listed)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if n not in listed and (is_temporary(n) or (n.startswith("shard_") and n.endswith(".h5"))))


def check_store(root: str | os.PathLike, full: bool = False, shards: Iterable[int] | None = None) -> StoreReport:
    """Check the store at ``root`` (all shards, or only those in ``shards``); changes nothing.

    ``full``: read every byte of every shard, even those with a recorded checksum.
    """
    report = StoreReport(Path(root))
    try:
        manifest = read_manifest(report.root)
    except StoreError as err:
        report.problems[None] = [str(err)]
        return report
    report.unlisted = unlisted_files(report.root, (e["file"] for e in manifest.shards.values()))
    wanted = None if shards is None else set(shards)
    for index, entry in sorted(manifest.shards.items()):
        if wanted is not None and index not in wanted:
            continue
        report.shards += 1
        problems = check_shard(report.root, manifest.spec, index, entry, full)
        if problems:
            report.problems[index] = problems
        else:
            report.episodes += len(entry["lengths"])
    return report

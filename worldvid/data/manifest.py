"""An episode store's layout and manifest: file names, the spec, one checked entry per finished shard.

``manifest.json``::

    {"format": 1,
     "spec": {"env_id": ..., "frame_shape": [H, W, 3], "action_dim": A, "policy": ..., "seed": S, ...},
     "shards": {"0": {"file": "shard_00000.h5", "first_episode": 0, "lengths": [T0, T1, ...],
                      "reached_goal": [...], "returns": [...], "bytes": N, "sha256": "..."}, ...}}

Nothing read from a manifest is trusted (``read_manifest``): every shard file must be the store's own plain
name for that shard, inside the store folder (no absolute path, no ``..``, no link leading out), and every
entry must hold its fields with their types and agree with the spec's numbering. A bad manifest raises
``ManifestError`` (a ValueError) naming the manifest, the entry and the field. ``sha256`` (with ``bytes``)
lets a shard be verified without opening it; manifests written before it existed lack it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from worldvid.atomic import write_json_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_TEMPORARY = re.compile(r"\.?(shard_\d+\.h5|manifest\.json)\.tmp\d+")
"""Temporary names of the store's writers, ``worldvid.atomic.temporary_name``'s ``.shard_00001.h5.tmp<pid>`` and
``.manifest.json.tmp<pid>`` (and ``shard_00001.h5.tmp<pid>``, without the dot, of stores written before)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreError(RuntimeError):
    """A store folder is missing, incomplete or unreadable."""


class ManifestError(StoreError, ValueError):
    """A store's manifest is unreadable or holds something it must not (a path leading out, a missing field)."""


class StoreMismatchError(ValueError):
    """A folder already holds data collected with another configuration (env, size, policy, seed)."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (h5py's can run to several), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard_{index:05d}.h5"


def episode_group(index: int) -> str:
    """Name of episode ``index``'s HDF5 group inside its shard."""
    return f"episode_{index:06d}"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a store writer's temporary file (what an interrupted write leaves behind)."""
    return _TEMPORARY.fullmatch(name) is not None


@dataclass(frozen=True)
class StoreSpec:
    """What every episode of a store shares; a store never mixes two specs.

    Attributes:
        env_id: Gymnasium id the episodes come from.
        frame_shape: (H, W, 3) of every frame.
        action_dim: A, the size of every action.
        policy: collection policy name.
        seed: base seed; episode i was reset with seed + i.
        episodes_per_shard: E, episodes per shard file.
        env_kwargs: keyword arguments the env was made with (JSON-able).
        compression: HDF5 filter for frames ("gzip" or "lzf"; both lossless).
    """

    env_id: str
    frame_shape: tuple[int, int, int]
    action_dim: int
    policy: str
    seed: int
    episodes_per_shard: int = 10
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    compression: str = "gzip"

    def __post_init__(self) -> None:
        if self.episodes_per_shard < 1:
            raise ValueError(f"episodes_per_shard must be >= 1, got {self.episodes_per_shard}")
        if self.compression not in ("gzip", "lzf"):
            raise ValueError(f"compression must be 'gzip' or 'lzf', got {self.compression!r}")
        object.__setattr__(self, "frame_shape", tuple(int(s) for s in self.frame_shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        out["frame_shape"] = list(self.frame_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StoreSpec":
        """Inverse of ``to_dict``."""
        return cls(**{**data, "frame_shape": tuple(data["frame_shape"])})

    def shard_of(self, episode: int) -> int:
        """Index of the shard that holds episode ``episode``."""
        return episode // self.episodes_per_shard

    def episodes_of(self, shard: int, num_episodes: int) -> list[int]:
        """Episode indices shard ``shard`` holds when the store has ``num_episodes`` episodes."""
        start = shard * self.episodes_per_shard
        return list(range(start, min(start + self.episodes_per_shard, num_episodes)))


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: the spec and {shard index: entry} (entries as in the file, every field validated)."""

    spec: StoreSpec
    shards: dict[int, dict[str, Any]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SPEC_TYPES: dict[str, tuple[Any, str]] = {
    "env_id": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "frame_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(s) and s > 0 for s in v)
                    and v[2] == 3, "[H, W, 3] of positive integers"),
    "action_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "policy": (lambda v: isinstance(v, str), "a string"),
    "seed": (_is_int, "an integer"),
    "episodes_per_shard": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "env_kwargs": (lambda v: isinstance(v, dict), "an object"),
    "compression": (lambda v: v in ("gzip", "lzf"), "'gzip' or 'lzf'"),
}
_SPEC_REQUIRED = tuple(f.name for f in fields(StoreSpec) if f.default is MISSING and f.default_factory is MISSING)


def _check_spec(data: Any, where: str) -> StoreSpec:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: 'spec' must be an object, got {type(data).__name__}")
    for name in data:
        if name not in _SPEC_TYPES:
            raise ManifestError(f"{where}: spec field {name!r} is unknown")
    for name, (valid, expected) in _SPEC_TYPES.items():
        if name not in data:
            if name in _SPEC_REQUIRED:
                raise ManifestError(f"{where}: spec field {name!r} is missing")
        elif not valid(data[name]):
            raise ManifestError(f"{where}: spec field {name!r} must be {expected}, got {data[name]!r:.80}")
    return StoreSpec.from_dict(data)


_ENTRY_TYPES: dict[str, tuple[Any, str]] = {
    "file": (lambda v: isinstance(v, str), "a string"),
    "first_episode": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "lengths": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(n) and n >= 1 for n in v),
                "a non-empty list of integers >= 1"),
    "reached_goal": (lambda v: isinstance(v, list) and all(r is None or isinstance(r, bool) for r in v),
                     "a list of true / false / null"),
    "returns": (lambda v: isinstance(v, list) and all(_is_number(r) for r in v), "a list of numbers"),
    "bytes": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}


def inside_store(root: Path, name: str) -> bool:
    """Whether ``name`` is a plain file name that stays inside the folder ``root`` once links are resolved."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or os.path.isabs(name):
        return False
    return (root / name).resolve().parent == root.resolve()


def _check_entry(root: Path, where: str, key: Any, entry: Any, spec: StoreSpec) -> tuple[int, dict[str, Any]]:
    where = f"{where}: shard entry {key!r}"
    if not (isinstance(key, str) and key.isascii() and key.isdigit()):
        raise ManifestError(f"{where}: the key must be a shard number")
    index = int(key)
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: must be an object, got {type(entry).__name__}")

    def bad(name: str, problem: str) -> ManifestError:
        return ManifestError(f"{where}, field {name!r}: {problem}")

    for name, (valid, expected) in _ENTRY_TYPES.items():
        if name not in entry:
            raise bad(name, "missing")
        if not valid(entry[name]):
            raise bad(name, f"must be {expected}, got {entry[name]!r:.80}")
    if not inside_store(root, entry["file"]):
        raise bad("file", f"{entry['file']!r} is not a plain file name inside the store folder {root}")
    if entry["file"] != shard_name(index):
        raise bad("file", f"must be {shard_name(index)!r} (the name of shard {index}), got {entry['file']!r}")
    if entry["first_episode"] != index * spec.episodes_per_shard:
        raise bad("first_episode", f"must be {index * spec.episodes_per_shard} (shard {index} of "
                  f"{spec.episodes_per_shard} episodes), got {entry['first_episode']}")
    count = len(entry["lengths"])
    if count > spec.episodes_per_shard:
        raise bad("lengths", f"lists {count} episodes, a shard holds at most {spec.episodes_per_shard}")
    for name in ("reached_goal", "returns"):
        if len(entry[name]) != count:
            raise bad(name, f"lists {len(entry[name])} episodes, 'lengths' lists {count}")
    if "sha256" in entry and not (isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])):
        raise bad("sha256", f"must be 64 lowercase hex digits, got {entry['sha256']!r:.80}")
    return index, entry


def read_manifest(root: str | os.PathLike) -> Manifest:
    """The checked manifest of the store at ``root``.

    Raises StoreError when there is none, ManifestError (one line naming the entry and field) when it is bad.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise StoreError(f"{root} is not an episode store: {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is corrupt: {err}") from err
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is corrupt: expected a JSON object, got {type(data).__name__}")
    for name in ("format", "spec", "shards"):
        if name not in data:
            raise ManifestError(f"{path} is corrupt: field {name!r} is missing")
    if not _is_int(data["format"]) or data["format"] > FORMAT_VERSION:
        raise ManifestError(f"{path}: format {data['format']!r} is not one this worldvid reads (<= {FORMAT_VERSION})")
    spec = _check_spec(data["spec"], str(path))
    if not isinstance(data["shards"], dict):
        raise ManifestError(f"{path}: 'shards' must be an object, got {type(data['shards']).__name__}")
    shards = dict(_check_entry(root, str(path), key, entry, spec) for key, entry in data["shards"].items())
    return Manifest(spec, shards)


def write_manifest(root: str | os.PathLike, spec: StoreSpec, shards: dict[int, dict[str, Any]]) -> None:
    """Write the manifest atomically (temporary name, fsync, rename)."""
    ordered = {str(k): shards[k] for k in sorted(shards)}
    write_json_atomic(Path(root) / MANIFEST, {"format": FORMAT_VERSION, "spec": spec.to_dict(), "shards": ordered})


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of a file, read in ``chunk``-byte pieces."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()

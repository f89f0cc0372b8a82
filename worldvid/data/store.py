"""Episodes on disk: HDF5 shards plus a JSON manifest, written atomically.

Layout of a store folder::

    manifest.json           what the store holds (spec + one entry per finished shard)
    shard_00000.h5          episodes 0 .. E-1, one group ``episode_000000`` each
    shard_00001.h5          episodes E .. 2E-1
    ...

Shard ``j`` always holds episodes ``j*E .. j*E+E-1`` (E = ``episodes_per_shard``), so what a shard holds
does not depend on how many workers collected it. A shard is written under a temporary name and renamed,
and the manifest is rewritten (also atomically) after each shard: a shard the manifest lists is whole.
Every dataset carries HDF5's fletcher32 checksum, so a corrupted byte is caught when it is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from worldvid.atomic import write_json_atomic
from worldvid.data.episode import Episode

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_TMP_SUFFIX = ".tmp"
_CHUNK_CACHE_BYTES = 64 * 1024
_MAX_OPEN_FILES = 64


class StoreError(RuntimeError):
    """A store folder is missing, incomplete or unreadable."""


class CorruptShardError(StoreError):
    """A shard file is truncated, corrupt or does not hold what the manifest says."""


class StoreMismatchError(ValueError):
    """A folder already holds data collected with another configuration (env, size, policy, seed)."""


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


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard_{index:05d}.h5"


def _episode_group(index: int) -> str:
    return f"episode_{index:06d}"


class EpisodeStore:
    """A folder of HDF5 shards described by ``manifest.json``.

    Open an existing store with ``EpisodeStore(root)``; make or resume one with ``EpisodeStore.create``.
    File handles are opened lazily and per process, so a store can be shared by DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise StoreError(f"{self.root} is not an episode store: {manifest} is missing")
        try:
            data = json.loads(manifest.read_text())
            self.spec = StoreSpec.from_dict(data["spec"])
            self._shards: dict[int, dict[str, Any]] = {int(k): v for k, v in data["shards"].items()}
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise StoreError(f"{manifest} is corrupt: {err}") from err
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    @classmethod
    def create(cls, root: str | os.PathLike, spec: StoreSpec) -> "EpisodeStore":
        """Open the store at ``root`` for writing, making it if needed.

        An existing store must have been made with the same spec, else ``StoreMismatchError`` (nothing is
        touched). Leftover temporary files of an interrupted write are removed.
        """
        root = Path(root)
        if (root / MANIFEST).is_file():
            store = cls(root)
            if store.spec != spec:
                raise StoreMismatchError(
                    f"{root} already holds data collected with another configuration: "
                    f"{_spec_difference(store.spec, spec)}. Use another --out folder."
                )
        else:
            if root.exists() and any(root.glob("shard_*.h5")):
                raise StoreMismatchError(f"{root} holds shard files but no {MANIFEST}; refusing to overwrite them")
            root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(root / MANIFEST, {"format": FORMAT_VERSION, "spec": spec.to_dict(), "shards": {}})
            store = cls(root)
        for leftover in root.glob(f"*{_TMP_SUFFIX}*"):
            leftover.unlink()
        return store

    # ------------------------------------------------------------------ writing
    def write_shard(self, index: int, episodes: list[Episode]) -> None:
        """Write ``episodes`` as shard ``index`` (temporary file, then rename) and record it in the manifest.

        The episodes must be exactly those the spec assigns to this shard, in order (their seeds tell).
        """
        spec = self.spec
        first = index * spec.episodes_per_shard
        if not episodes or len(episodes) > spec.episodes_per_shard:
            raise ValueError(f"shard {index} takes 1..{spec.episodes_per_shard} episodes, got {len(episodes)}")
        for offset, ep in enumerate(episodes):
            _check_matches_spec(ep, spec, expected_seed=spec.seed + first + offset)
        path = self.root / shard_name(index)
        tmp = path.with_name(f"{path.name}{_TMP_SUFFIX}{os.getpid()}")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_VERSION
            f.attrs["env_id"] = spec.env_id
            for offset, ep in enumerate(episodes):
                _write_episode(f.create_group(_episode_group(first + offset)), ep, spec.compression)
        self._close_handle(index)
        os.replace(tmp, path)
        self._shards[index] = {
            "file": path.name,
            "first_episode": first,
            "lengths": [ep.num_steps for ep in episodes],
            "reached_goal": [ep.reached_goal for ep in episodes],
            "returns": [float(ep.rewards.sum()) for ep in episodes],
            "bytes": path.stat().st_size,
        }
        self._save_manifest()

    def write_episodes(self, episodes: list[Episode]) -> None:
        """Write whole shards of episodes given in seed order from the spec's seed (episode i has seed + i).

        The last shard may be partial. Each shard goes through ``write_shard`` (atomic, checked against the spec).
        """
        per = self.spec.episodes_per_shard
        for index in range(-(-len(episodes) // per)):
            self.write_shard(index, list(episodes[index * per:(index + 1) * per]))

    def _save_manifest(self) -> None:
        shards = {str(k): self._shards[k] for k in sorted(self._shards)}
        write_json_atomic(self.root / MANIFEST, {"format": FORMAT_VERSION, "spec": self.spec.to_dict(), "shards": shards})

    # ------------------------------------------------------------------ contents
    def has_shard(self, index: int, num_episodes: int) -> bool:
        """True when shard ``index`` is finished and holds what ``num_episodes`` episodes assign to it."""
        info = self._shards.get(index)
        if info is None or not (self.root / info["file"]).is_file():
            return False
        return len(info["lengths"]) == len(self.spec.episodes_of(index, num_episodes))

    @property
    def episode_ids(self) -> list[int]:
        """Indices of all episodes in finished shards, ascending."""
        return [info["first_episode"] + i for _, info in sorted(self._shards.items()) for i in range(len(info["lengths"]))]

    def __len__(self) -> int:
        return sum(len(info["lengths"]) for info in self._shards.values())

    def episode_length(self, episode: int) -> int:
        """T of episode ``episode`` (from the manifest; no file is opened)."""
        info = self._shard_info(episode)
        return int(info["lengths"][episode - info["first_episode"]])

    def _shard_info(self, episode: int) -> dict[str, Any]:
        info = self._shards.get(self.spec.shard_of(episode))
        if info is None or not 0 <= episode - info["first_episode"] < len(info["lengths"]):
            raise KeyError(f"episode {episode} is not in the store at {self.root}")
        return info

    # ------------------------------------------------------------------ reading
    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():  # a forked DataLoader worker: never share the parent's handles
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            info = self._shards[shard]
            path = self.root / info["file"]
            if not path.is_file():
                raise CorruptShardError(f"shard file {path} is missing (the manifest lists it)")
            if path.stat().st_size != info["bytes"]:
                raise CorruptShardError(
                    f"shard file {path} is truncated or was changed: {path.stat().st_size} bytes, manifest says {info['bytes']}"
                )
            try:
                # Random windows gain little from HDF5's 1 MiB-per-dataset chunk cache, and with
                # thousands of episodes open that cache is what would grow: keep it to a few chunks.
                handle = h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            except OSError as err:
                raise CorruptShardError(f"shard file {path} is corrupt: {err}") from err
            if len(self._handles) >= _MAX_OPEN_FILES:  # each open file holds ~1 MB of HDF5 metadata cache
                self._close_handle(next(iter(self._handles)))
            self._handles[shard] = handle
        return handle

    def _group(self, episode: int) -> h5py.Group:
        info = self._shard_info(episode)
        shard = self.spec.shard_of(episode)
        try:
            return self._file(shard)[_episode_group(episode)]
        except KeyError as err:
            raise CorruptShardError(f"shard file {self.root / info['file']} lacks episode {episode}") from err

    def _read(self, episode: int, name: str, index: slice | tuple = ()) -> np.ndarray:
        group = self._group(episode)
        try:
            return group[name][index]
        except (OSError, KeyError) as err:
            shard = self.root / self._shard_info(episode)["file"]
            raise CorruptShardError(f"shard file {shard}: cannot read {name} of episode {episode}: {err}") from err

    def read_frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` of an episode: uint8 [stop-start, H, W, 3]."""
        return self._read(episode, "frames", np.s_[start:stop])

    def read_actions(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Actions ``start..stop-1`` of an episode: float32 [stop-start, A]."""
        return self._read(episode, "actions", np.s_[start:stop])

    def read_episode(self, episode: int) -> Episode:
        """The whole episode ``episode``."""
        group = self._group(episode)
        arrays = {name: self._read(episode, name) for name in ("frames", "actions", "rewards", "terminated", "truncated")}
        optional = {name: self._read(episode, name) if name in group else None for name in ("goal_frame", "success")}
        return Episode(
            **arrays,
            **optional,
            env_id=str(group.attrs["env_id"]),
            seed=int(group.attrs["seed"]),
            policy=str(group.attrs["policy"]),
        )

    def iter_episodes(self, episodes: Iterable[int] | None = None) -> Iterable[Episode]:
        """Yield episodes (all finished ones by default) in order."""
        for episode in self.episode_ids if episodes is None else episodes:
            yield self.read_episode(episode)

    def verify(self) -> int:
        """Read every byte of every shard (checksums included); return the number of episodes checked.

        Raises ``CorruptShardError`` naming the first bad file.
        """
        for episode in self.episode_ids:
            self.read_episode(episode)
        return len(self)

    def close(self) -> None:
        """Close open file handles (they reopen on demand)."""
        for shard in list(self._handles):
            self._close_handle(shard)

    def _close_handle(self, shard: int) -> None:
        handle = self._handles.pop(shard, None)
        if handle is not None:
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def summary(self) -> dict[str, Any]:
        """Counts a person wants to see: episodes, frames, bytes per frame, share of episodes reaching the goal."""
        infos = list(self._shards.values())
        lengths = [n for info in infos for n in info["lengths"]]
        reached = [r for info in infos for r in info["reached_goal"] if r is not None]
        returns = [r for info in infos for r in info["returns"]]
        frames = sum(n + 1 for n in lengths)
        size = sum(info["bytes"] for info in infos)
        return {
            "root": str(self.root),
            "env_id": self.spec.env_id,
            "policy": self.spec.policy,
            "frame_shape": list(self.spec.frame_shape),
            "action_dim": self.spec.action_dim,
            "episodes": len(lengths),
            "shards": len(infos),
            "frames": frames,
            "bytes": size,
            "bytes_per_frame": size / frames if frames else float("nan"),
            "raw_bytes_per_frame": int(np.prod(self.spec.frame_shape)),
            "goal_reached_fraction": float(np.mean(reached)) if reached else None,
            "mean_return": float(np.mean(returns)) if returns else None,
        }


def _write_episode(group: h5py.Group, ep: Episode, compression: str) -> None:
    height, width, _ = ep.frame_shape
    # Chunks of 5 frames (a K=4 window plus its target) keep a random window read to one or two chunks.
    chunk = (min(5, ep.num_steps + 1), height, width, 3)
    opts = {"compression": compression, "fletcher32": True}
    if compression == "gzip":
        opts["compression_opts"] = 4
    group.create_dataset("frames", data=ep.frames, chunks=chunk, **opts)
    group.create_dataset("actions", data=ep.actions, fletcher32=True)
    group.create_dataset("rewards", data=ep.rewards, fletcher32=True)
    group.create_dataset("terminated", data=ep.terminated, fletcher32=True)
    group.create_dataset("truncated", data=ep.truncated, fletcher32=True)
    if ep.goal_frame is not None:
        group.create_dataset("goal_frame", data=ep.goal_frame, fletcher32=True)
    if ep.success is not None:
        group.create_dataset("success", data=ep.success, fletcher32=True)
    group.attrs.update({"env_id": ep.env_id, "seed": ep.seed, "policy": ep.policy})


def _check_matches_spec(ep: Episode, spec: StoreSpec, expected_seed: int) -> None:
    if ep.env_id != spec.env_id:
        raise StoreMismatchError(f"episode from {ep.env_id!r} cannot go into a store of {spec.env_id!r}")
    if ep.frame_shape != spec.frame_shape or ep.action_dim != spec.action_dim:
        raise StoreMismatchError(
            f"episode frames {list(ep.frame_shape)} / action dim {ep.action_dim} do not match the store's "
            f"{list(spec.frame_shape)} / {spec.action_dim}"
        )
    if ep.seed != expected_seed:
        raise ValueError(f"episode with seed {ep.seed} is out of place: this slot expects seed {expected_seed}")


def _spec_difference(old: StoreSpec, new: StoreSpec) -> str:
    a, b = old.to_dict(), new.to_dict()
    return ", ".join(f"{key} is {a[key]!r} there, {b[key]!r} asked" for key in a if a[key] != b[key])

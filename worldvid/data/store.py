"""Episodes on disk: a folder of HDF5 shards plus a JSON manifest, with one writer at a time.

Layout of a store folder::

    manifest.json           what the store holds: the spec + one checked entry per finished shard (``manifest``)
    shard_00000.h5          episodes 0 .. E-1, one group ``episode_000000`` each (``shard``)
    shard_00001.h5          episodes E .. 2E-1
    .worldvid.lock          held by the one writer (``EpisodeStore.create``, ``worldvid.locks``)

Shard ``j`` always holds episodes ``j*E .. j*E+E-1`` (E = ``episodes_per_shard``), so what a shard holds does
not depend on how many workers collected it. A shard is written under a temporary name, flushed and renamed;
only then is the manifest (re-read under the lock) rewritten atomically with its size and sha256. Readers
read only what the manifest lists, so they never see a half-written shard; ``check`` and ``verify``
(``worldvid.data.verify``) compare every shard with its entry.
"""

from __future__ import annotations

import os
import weakref
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from worldvid.atomic import fsync_path, temporary_name
from worldvid.data.episode import Episode
# StoreSpec, shard_name, FORMAT_VERSION and the errors live in worldvid.data.manifest and are re-exported here.
from worldvid.data.manifest import (FORMAT_VERSION, MANIFEST, Manifest, ManifestError, StoreError,  # noqa: F401
                                    StoreMismatchError, StoreSpec, episode_group, file_digest, first_line,
                                    is_temporary, read_manifest, shard_name, write_manifest)
from worldvid.data.shard import OPTIONAL_ARRAYS, REQUIRED_ARRAYS, check_matches_spec, write_shard_file
from worldvid.data.verify import StoreReport, check_store
from worldvid.locks import folder_lock

_CHUNK_CACHE_BYTES = 64 * 1024
_MAX_OPEN_FILES = 64
BROKEN_DIR = "broken"
"""Sub-folder a writer moves shards that fail verification into (``EpisodeStore.discard_broken``)."""


class CorruptShardError(StoreError):
    """A shard file is truncated, corrupt or does not hold what the manifest says."""


_WRITERS: "weakref.WeakSet[EpisodeStore]" = weakref.WeakSet()
_INHERITED_LOCKS: list[ExitStack] = []


def _forget_writer_locks() -> None:
    """In a forked child (a DataLoader worker) a writer's lock is its parent's: never release it from here (the
    child's cleanup would unlock the parent's file) and never write."""
    for store in list(_WRITERS):
        if store._lock is not None:
            _INHERITED_LOCKS.append(store._lock)
            store._lock = None


os.register_at_fork(after_in_child=_forget_writer_locks)


class EpisodeStore:
    """A folder of HDF5 shards described by ``manifest.json``.

    Open an existing store for reading with ``EpisodeStore(root)``; make or resume one for writing with
    ``EpisodeStore.create``, which holds the folder's write lock (``worldvid.locks``) until ``close()`` or the
    end of a ``with`` block, so a store has one writer at a time. Readers take no lock and see only the
    shards the manifest lists, each whole. File handles are opened lazily and per process, so a store can be
    shared by DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)  # checked: schema, and every shard path inside the folder
        self.spec = manifest.spec
        self._shards: dict[int, dict[str, Any]] = manifest.shards
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._lock: ExitStack | None = None

    @classmethod
    def create(cls, root: str | os.PathLike, spec: StoreSpec) -> "EpisodeStore":
        """Open the store at ``root`` for writing, making it if needed; the caller should ``close()`` it.

        Raises ``worldvid.locks.FolderLockedError`` when another writer holds the store. An existing store
        must have been made with the same spec, else ``StoreMismatchError`` (nothing is touched). Temporary
        files of an interrupted (dead) writer are removed.
        """
        root = Path(root)
        lock = ExitStack()
        lock.enter_context(folder_lock(root, "writing an episode store"))
        try:
            if (root / MANIFEST).is_file():
                store = cls(root)
                if store.spec != spec:
                    raise StoreMismatchError(
                        f"{root} already holds data collected with another configuration: "
                        f"{_spec_difference(store.spec, spec)}. Use another --out folder."
                    )
            else:
                if any(root.glob("shard_*.h5")):
                    raise StoreMismatchError(f"{root} holds shard files but no {MANIFEST}; refusing to overwrite them")
                write_manifest(root, spec, {})
                store = cls(root)
            for name in os.listdir(root):  # under the lock: only a dead writer can have left these
                if is_temporary(name):
                    (root / name).unlink(missing_ok=True)
        except BaseException:
            lock.close()
            raise
        store._lock = lock
        _WRITERS.add(store)
        return store

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self) -> None:
        if self._lock is None:
            raise StoreError(f"the store at {self.root} is not open for writing here: use EpisodeStore.create "
                             "(and write before close())")

    # ------------------------------------------------------------------ writing
    def write_shard(self, index: int, episodes: list[Episode]) -> None:
        """Write ``episodes`` as shard ``index`` (temporary file, fsync, rename) and record it in the manifest.

        The episodes must be exactly those the spec assigns to this shard, in order (their seeds tell). The
        manifest entry records the shard's byte size and sha256; the manifest is re-read from disk under the
        lock and rewritten atomically only once the shard is whole under its final name.
        """
        self._check_writable()
        spec = self.spec
        first = index * spec.episodes_per_shard
        if not episodes or len(episodes) > spec.episodes_per_shard:
            raise ValueError(f"shard {index} takes 1..{spec.episodes_per_shard} episodes, got {len(episodes)}")
        for offset, ep in enumerate(episodes):
            check_matches_spec(ep, spec, expected_seed=spec.seed + first + offset)
        path = self.root / shard_name(index)
        tmp = temporary_name(path)
        try:
            write_shard_file(tmp, spec, first, episodes)
            fsync_path(tmp)
            size, sha256 = file_digest(tmp)
            shards = self._manifest_on_disk().shards
            self._close_handle(index)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(self.root)
        shards[index] = {
            "file": path.name,
            "first_episode": first,
            "lengths": [ep.num_steps for ep in episodes],
            "reached_goal": [ep.reached_goal for ep in episodes],
            "returns": [float(ep.rewards.sum()) for ep in episodes],
            "bytes": size,
            "sha256": sha256,
        }
        self._save_manifest(shards)

    def write_episodes(self, episodes: list[Episode]) -> None:
        """Write whole shards of episodes given in seed order from the spec's seed (episode i has seed + i).

        The last shard may be partial. Each shard goes through ``write_shard`` (atomic, checked against the spec).
        """
        per = self.spec.episodes_per_shard
        for index in range(-(-len(episodes) // per)):
            self.write_shard(index, list(episodes[index * per:(index + 1) * per]))

    def discard_broken(self, shards: Iterable[int] | None = None) -> list[str]:
        """Check the listed shards (all, or those in ``shards``) and set aside every broken one.

        A broken shard (missing, truncated, checksum mismatch, unreadable, or holding other lengths than the
        manifest says: ``check``) is dropped from the manifest and its file moved into ``broken/``, so that
        ``has_shard`` is False for it and a collector writes it again. Returns one line per shard set aside.
        """
        self._check_writable()
        report = self.check(shards=shards)
        if not report.broken_shards:
            return []
        kept = dict(self._manifest_on_disk().shards)
        for index in report.broken_shards:
            kept.pop(index, None)
        self._save_manifest(kept)  # readers stop seeing them before the files move
        lines = []
        for index in report.broken_shards:
            self._close_handle(index)
            path = self.root / shard_name(index)
            line = f"{path}: {report.problems[index][0]}"
            if path.exists():
                aside = _free_name(self.root / BROKEN_DIR / path.name)
                aside.parent.mkdir(exist_ok=True)
                os.replace(path, aside)
                line += f"; moved to {aside}"
            lines.append(line)
        fsync_path(self.root)
        return lines

    def _manifest_on_disk(self) -> Manifest:
        """The manifest as it is on disk now (a writer reads it under its lock, never from a stale copy)."""
        manifest = read_manifest(self.root)
        if manifest.spec != self.spec:
            raise StoreError(f"{self.root / MANIFEST} was replaced by one of another configuration while this "
                             "store was open")
        return manifest

    def _save_manifest(self, shards: dict[int, dict[str, Any]]) -> None:
        write_manifest(self.root, self.spec, shards)
        fsync_path(self.root)
        self._shards = shards

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
                info = self._grown_entry(shard, path)
            try:
                # Random windows gain little from HDF5's 1 MiB-per-dataset chunk cache, and with
                # thousands of episodes open that cache is what would grow: keep it to a few chunks.
                handle = h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            except OSError as err:
                raise CorruptShardError(f"shard file {path} is corrupt: {first_line(err)}") from err
            if len(self._handles) >= _MAX_OPEN_FILES:  # each open file holds ~1 MB of HDF5 metadata cache
                self._close_handle(next(iter(self._handles)))
            self._handles[shard] = handle
        return handle

    def _grown_entry(self, shard: int, path: Path) -> dict[str, Any]:
        """The manifest entry of a shard whose size is not the one this reader knows: a writer may have grown it
        since (a rerun of collect with more episodes renames a longer shard over it). Adopted when the manifest
        on disk now describes the file and keeps every episode this reader knows, else CorruptShardError."""
        old, size = self._shards[shard], path.stat().st_size
        try:
            new = read_manifest(self.root).shards.get(shard)
        except StoreError:
            new = None
        known = len(old["lengths"])
        if new is None or new["bytes"] != size or new["lengths"][:known] != old["lengths"]:
            raise CorruptShardError(f"shard file {path} is truncated or was changed: {size} bytes, "
                                    f"the manifest says {old['bytes']}")
        self._shards[shard] = {**new, **{k: new[k][:known] for k in ("lengths", "reached_goal", "returns")}}
        return self._shards[shard]

    def _group(self, episode: int) -> h5py.Group:
        info = self._shard_info(episode)
        shard = self.spec.shard_of(episode)
        try:
            return self._file(shard)[episode_group(episode)]
        except KeyError as err:
            raise CorruptShardError(f"shard file {self.root / info['file']} lacks episode {episode}") from err

    def _read(self, episode: int, name: str, index: slice | tuple = ()) -> np.ndarray:
        group = self._group(episode)
        try:
            return group[name][index]
        except (OSError, KeyError) as err:
            shard = self.root / self._shard_info(episode)["file"]
            raise CorruptShardError(f"shard file {shard}: cannot read {name} of episode {episode}: "
                                    f"{first_line(err)}") from err

    def read_frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` of an episode: uint8 [stop-start, H, W, 3]."""
        return self._read(episode, "frames", np.s_[start:stop])

    def read_actions(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Actions ``start..stop-1`` of an episode: float32 [stop-start, A]."""
        return self._read(episode, "actions", np.s_[start:stop])

    def read_episode(self, episode: int) -> Episode:
        """The whole episode ``episode``."""
        group = self._group(episode)
        arrays = {name: self._read(episode, name) for name in REQUIRED_ARRAYS}
        optional = {name: self._read(episode, name) if name in group else None for name in OPTIONAL_ARRAYS}
        try:
            attrs = {"env_id": str(group.attrs["env_id"]), "seed": int(group.attrs["seed"]),
                     "policy": str(group.attrs["policy"])}
        except KeyError as err:
            raise CorruptShardError(f"shard file {self.root / self._shard_info(episode)['file']}: episode {episode} "
                                    f"lacks its {first_line(err)} attribute") from err
        return Episode(**arrays, **optional, **attrs)

    def iter_episodes(self, episodes: Iterable[int] | None = None) -> Iterable[Episode]:
        """Yield episodes (all finished ones by default) in order."""
        for episode in self.episode_ids if episodes is None else episodes:
            yield self.read_episode(episode)

    def check(self, full: bool = False, shards: Iterable[int] | None = None) -> StoreReport:
        """What is wrong with the store on disk, per shard (``worldvid.data.verify.check_store``); changes nothing.

        Sizes and recorded sha256 checksums are compared, every listed episode's arrays are checked against
        the manifest's lengths, and shards without a recorded checksum (or all, with ``full``) are read in full.
        """
        return check_store(self.root, full=full, shards=shards)

    def verify(self) -> int:
        """Check every shard and read every byte (checksums included); return the number of episodes checked.

        Raises ``CorruptShardError`` naming the first problem; ``check()`` reports them all.
        """
        report = self.check(full=True)
        if not report.ok:
            raise CorruptShardError(report.lines()[0])
        return report.episodes

    def close(self) -> None:
        """Close open file handles (they reopen on demand) and, for a writer, release the write lock."""
        for shard in list(self._handles):
            self._close_handle(shard)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def _close_handle(self, shard: int) -> None:
        handle = self._handles.pop(shard, None)
        if handle is not None:
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_lock"] = None  # a copy in another process is a reader
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


def _free_name(path: Path) -> Path:
    """``path``, or ``path`` with ``.1``, ``.2``, ... appended when it exists."""
    n = 0
    while (candidate := path.with_name(f"{path.name}.{n}" if n else path.name)).exists():
        n += 1
    return candidate


def _spec_difference(old: StoreSpec, new: StoreSpec) -> str:
    a, b = old.to_dict(), new.to_dict()
    return ", ".join(f"{key} is {a[key]!r} there, {b[key]!r} asked" for key in a if a[key] != b[key])

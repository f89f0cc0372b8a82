"""A shard file: one HDF5 file holding consecutive episodes of a store, one group ``episode_NNNNNN`` each.

Every dataset carries HDF5's fletcher32 checksum, so a corrupted byte is caught when it is read. Frames are
compressed losslessly (gzip or lzf, the spec's choice) in chunks of 5 frames.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

from worldvid.data.episode import Episode
from worldvid.data.manifest import FORMAT_VERSION, StoreMismatchError, StoreSpec, episode_group

REQUIRED_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated")
OPTIONAL_ARRAYS = ("goal_frame", "success")


def episode_arrays(spec: StoreSpec, steps: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{array name: (shape, dtype)} of an episode of T = ``steps`` in a store of ``spec`` (optional ones included)."""
    return {"frames": ((steps + 1, *spec.frame_shape), np.uint8), "actions": ((steps, spec.action_dim), np.float32),
            "rewards": ((steps,), np.float32), "terminated": ((steps,), np.bool_), "truncated": ((steps,), np.bool_),
            "goal_frame": (tuple(spec.frame_shape), np.uint8), "success": ((steps,), np.bool_)}


def check_matches_spec(ep: Episode, spec: StoreSpec, expected_seed: int) -> None:
    """Raise when ``ep`` cannot be the episode of seed ``expected_seed`` in a store of ``spec``."""
    if ep.env_id != spec.env_id:
        raise StoreMismatchError(f"episode from {ep.env_id!r} cannot go into a store of {spec.env_id!r}")
    if ep.frame_shape != spec.frame_shape or ep.action_dim != spec.action_dim:
        raise StoreMismatchError(
            f"episode frames {list(ep.frame_shape)} / action dim {ep.action_dim} do not match the store's "
            f"{list(spec.frame_shape)} / {spec.action_dim}"
        )
    if ep.seed != expected_seed:
        raise ValueError(f"episode with seed {ep.seed} is out of place: this slot expects seed {expected_seed}")


def write_shard_file(path: str | os.PathLike, spec: StoreSpec, first: int, episodes: list[Episode]) -> None:
    """Write ``episodes`` (episode numbers ``first``, ``first + 1``, ...) as a new HDF5 file at ``path``."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_VERSION
        f.attrs["env_id"] = spec.env_id
        for offset, ep in enumerate(episodes):
            _write_episode(f.create_group(episode_group(first + offset)), ep, spec.compression)


def _write_episode(group: h5py.Group, ep: Episode, compression: str) -> None:
    height, width, _ = ep.frame_shape
    # Chunks of 5 frames (a K=4 window plus its target) keep a random window read to one or two chunks.
    chunk = (min(5, ep.num_steps + 1), height, width, 3)
    opts = {"compression": compression, "fletcher32": True}
    if compression == "gzip":
        opts["compression_opts"] = 4
    group.create_dataset("frames", data=ep.frames, chunks=chunk, **opts)
    for name in REQUIRED_ARRAYS[1:]:
        group.create_dataset(name, data=getattr(ep, name), fletcher32=True)
    for name in OPTIONAL_ARRAYS:
        if getattr(ep, name) is not None:
            group.create_dataset(name, data=getattr(ep, name), fletcher32=True)
    group.attrs.update({"env_id": ep.env_id, "seed": ep.seed, "policy": ep.policy})

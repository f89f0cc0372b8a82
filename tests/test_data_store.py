"""Episode validation, the HDF5 shard store and the frame-window dataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.conftest import make_episode
from worldvid.data.dataset import FrameWindowDataset, split_episodes
from worldvid.data.episode import Episode, EpisodeError
from worldvid.data.store import CorruptShardError, EpisodeStore, StoreError, StoreMismatchError, StoreSpec, shard_name


def spec(**overrides) -> StoreSpec:
    base = dict(env_id="test/Fake-v0", frame_shape=(8, 8, 3), action_dim=2, policy="test", seed=0, episodes_per_shard=2)
    return StoreSpec(**{**base, **overrides})


def filled_store(root, num_episodes: int = 5) -> EpisodeStore:
    store = EpisodeStore.create(root, spec())
    for shard in range(-(-num_episodes // 2)):
        store.write_shard(shard, [make_episode(seed=i) for i in store.spec.episodes_of(shard, num_episodes)])
    return store


# ---------------------------------------------------------------- Episode
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(frames=np.zeros((8, 8, 8, 3), np.float32)), "frames must be uint8"),
        (dict(frames=np.zeros((5, 8, 8, 3), np.uint8)), "T\\+1 = 8 frames"),
        (dict(actions=np.zeros((7, 2), np.float64)), "actions must be float32"),
        (dict(actions=np.full((7, 2), np.nan, np.float32)), "NaN"),
        (dict(rewards=np.zeros(6, np.float32)), "rewards must be float32 \\[7\\]"),
        (dict(goal_frame=np.zeros((4, 4, 3), np.uint8)), "goal_frame must be uint8"),
        (dict(env_id=""), "env_id"),
    ],
)
def test_episode_rejects_inconsistent_arrays(change, message):
    fields = {k: getattr(make_episode(), k) for k in Episode.__dataclass_fields__}
    with pytest.raises(EpisodeError, match=message):
        Episode(**{**fields, **change})


def test_episode_properties():
    ep = make_episode(steps=7)
    assert (ep.num_steps, ep.frame_shape, ep.action_dim, ep.reached_goal) == (7, (8, 8, 3), 2, True)
    assert ep.equals(make_episode(steps=7)) and not ep.equals(make_episode(steps=7, seed=1))


# ---------------------------------------------------------------- store
def test_store_round_trip_and_manifest(tmp_path):
    store = filled_store(tmp_path, 5)
    assert len(store) == 5 and store.episode_ids == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".worldvid.lock", "manifest.json", shard_name(0), shard_name(1),
                                                         shard_name(2)]
    reopened = EpisodeStore(tmp_path)
    for i in range(5):
        assert reopened.read_episode(i).equals(make_episode(seed=i))
    assert reopened.verify() == 5
    np.testing.assert_array_equal(reopened.read_frames(3, 2, 4), make_episode(seed=3).frames[2:4])
    summary = reopened.summary()
    assert summary["episodes"] == 5 and summary["frames"] == 40 and summary["goal_reached_fraction"] == 1.0
    assert 0 < summary["bytes_per_frame"]


def test_store_refuses_another_configuration_and_keeps_data(tmp_path):
    filled_store(tmp_path, 4)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(StoreMismatchError, match="env_id is 'test/Fake-v0' there, 'other/Env-v0' asked"):
        EpisodeStore.create(tmp_path, spec(env_id="other/Env-v0"))
    with pytest.raises(StoreMismatchError, match="frame_shape"):
        EpisodeStore.create(tmp_path, spec(frame_shape=(16, 16, 3)))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_store_rejects_misplaced_or_foreign_episodes(tmp_path):
    store = EpisodeStore.create(tmp_path, spec())
    with pytest.raises(ValueError, match="expects seed 2"):
        store.write_shard(1, [make_episode(seed=5)])
    with pytest.raises(StoreMismatchError, match="cannot go into a store"):
        store.write_shard(0, [make_episode(seed=0, env_id="x/Y-v0")])
    with pytest.raises(StoreMismatchError, match="do not match"):
        store.write_shard(0, [make_episode(seed=0, size=16)])
    assert len(EpisodeStore(tmp_path)) == 0


def test_missing_truncated_and_corrupt_shards_are_named(tmp_path):
    filled_store(tmp_path, 6)
    (tmp_path / shard_name(0)).unlink()
    with pytest.raises(CorruptShardError, match=f"{shard_name(0)} is missing"):
        EpisodeStore(tmp_path).read_episode(0)
    path = tmp_path / shard_name(1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match=f"{shard_name(1)} is truncated"):
        EpisodeStore(tmp_path).read_episode(2)
    # Same size, flipped bytes in the middle of the frame data: the checksum catches it.
    path = tmp_path / shard_name(2)
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, 2 * len(data) // 3, 97):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=shard_name(2)):
        EpisodeStore(tmp_path).read_episode(4)


def test_not_a_store_and_corrupt_manifest(tmp_path):
    with pytest.raises(StoreError, match="manifest.json is missing"):
        EpisodeStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(StoreError, match="is corrupt"):
        EpisodeStore(tmp_path)


def test_interrupted_write_leaves_no_whole_looking_shard(tmp_path, monkeypatch):
    store = filled_store(tmp_path, 2)
    manifest_before = (tmp_path / "manifest.json").read_text()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard(1, [make_episode(seed=2), make_episode(seed=3)])
    monkeypatch.undo()
    store.close()  # releases the write lock: one writer at a time
    assert not (tmp_path / shard_name(1)).exists()
    assert (tmp_path / "manifest.json").read_text() == manifest_before
    resumed = EpisodeStore.create(tmp_path, spec())  # cleans the temporary leftovers
    assert not any(".tmp" in p.name for p in tmp_path.iterdir())
    assert not resumed.has_shard(1, 4) and resumed.has_shard(0, 4)


def test_manifest_is_json_with_spec(tmp_path):
    filled_store(tmp_path, 3)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["spec"]["env_id"] == "test/Fake-v0" and data["shards"]["1"]["lengths"] == [7]


# ---------------------------------------------------------------- dataset
def test_windows_follow_the_convention_and_pad_starts(tmp_path):
    store = filled_store(tmp_path, 3)
    data = FrameWindowDataset(store, context=4)
    assert len(data) == 3 * 7
    item = data[0]  # episode 0, t = 0: three padded copies of frame 0, then frame 0; target frame 1
    assert item["context"].shape == (4, 8, 8, 3) and item["context"].dtype == torch.uint8
    assert [int(f[0, 0, 0]) for f in item["context"]] == [0, 0, 0, 0] and int(item["target"][0, 0, 0]) == 10
    assert item["context_actions"].tolist() == [[0, 0], [0, 0], [0, 0], [0, -0.0]]
    episode, t = data.locate(7 + 5)  # episode 1, t = 5
    assert (episode, t) == (1, 5)
    item = data[12]
    assert [int(f[0, 0, 0]) for f in item["context"]] == [21, 31, 41, 51] and int(item["target"][0, 0, 0]) == 61
    assert item["context_actions"][:, 0].tolist() == [2, 3, 4, 5]
    with pytest.raises(IndexError):
        data[len(data)]


def test_dataset_works_in_dataloader_workers(tmp_path):
    store = filled_store(tmp_path, 4)
    data = FrameWindowDataset(tmp_path, context=2, episodes=[1, 3])
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    targets = sorted(int(v) for batch in loader for v in batch["target"][:, 0, 0, 0])
    assert targets == sorted([10 * t + 1 for t in range(1, 8)] + [10 * t + 3 for t in range(1, 8)])
    store.close()


def test_split_is_deterministic_and_disjoint(tmp_path):
    store = filled_store(tmp_path, 5)
    train, held = split_episodes(store, held_out_fraction=0.2)
    assert train == [0, 1, 2, 3] and held == [4]

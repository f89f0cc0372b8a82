"""Minari export and import (``worldvid.data.minari_io``): a store -> Minari -> store round trip gives the same
episodes, datasets not made by worldvid come in when they hold pixels, and bad inputs end in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import make_episode

from worldvid.data import minari_io
from worldvid.data.minari_io import export_minari, import_minari
from worldvid.data.store import EpisodeStore, StoreMismatchError, StoreSpec, shard_name

minari = pytest.importorskip("minari")
from minari.data_collector import EpisodeBuffer  # noqa: E402


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A fresh, empty MINARI_DATASETS_PATH."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def same_stores(a: EpisodeStore, b: EpisodeStore) -> bool:
    return a.spec == b.spec and a.episode_ids == b.episode_ids and all(
        x.equals(y) for x, y in zip(a.iter_episodes(), b.iter_episodes()))


def foreign_dataset(dataset_id: str, observation_space: gym.Space, observations: list, action_space: gym.Space,
                    actions: list, seeds: list | None = None, **buffer) -> None:
    """A Minari dataset made without worldvid, one episode per entry of ``observations`` / ``actions``."""
    buffers = [EpisodeBuffer(observations=obs, actions=act, rewards=np.ones(len(act), np.float32),
                             terminations=np.zeros(len(act), bool), truncations=np.eye(1, len(act), len(act) - 1,
                                                                                       dtype=bool)[0],
                             seed=None if seeds is None else seeds[i], **buffer)
               for i, (obs, act) in enumerate(zip(observations, actions))]
    with pytest.warns(UserWarning):  # Minari asks for an author and more
        minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=observation_space,
                                           action_space=action_space, algorithm_name="someone-elses")


def test_round_trip_gives_the_same_episodes_and_minari_reads_the_dataset(store_dir, minari_root, tmp_path):
    report = export_minari(store_dir, "worldvid/point-v0", progress=False)
    assert (report.episodes, report.notes) == (6, []) and report.path == minari_root / "worldvid" / "point-v0"
    assert "worldvid/point-v0" in minari.list_local_datasets()
    assert not [p for p in minari_root.iterdir() if p.name.startswith(".")]  # the staging folder is gone

    dataset = minari.load_dataset("worldvid/point-v0")
    source = EpisodeStore(store_dir)
    first = source.read_episode(0)
    assert dataset.total_episodes == 6 and dataset.total_steps == sum(map(source.episode_length, source.episode_ids))
    assert set(dataset.observation_space.spaces) == {"observation", "desired_goal"}  # goal frames survive
    data = dataset[0]
    assert np.array_equal(data.observations["observation"], first.frames)
    assert np.array_equal(data.observations["desired_goal"][-1], first.goal_frame)
    assert np.array_equal(data.actions, first.actions) and np.array_equal(data.infos["success"][1:], first.success)
    meta = dataset.storage.metadata["worldvid"]
    assert meta["env_id"] == "worldvid/PointReach-v0" and meta["frame_shape"] == [16, 16, 3]
    assert meta["source_store"] == str(store_dir.resolve())
    env = dataset.recover_environment()  # the env spec records the store's frame size
    assert env.observation_space.shape == (16, 16, 3)
    env.close()

    back = import_minari("worldvid/point-v0", tmp_path / "back", progress=False)
    assert back.new_episodes == 6 and back.notes == []
    assert same_stores(source, EpisodeStore(tmp_path / "back"))
    assert EpisodeStore(tmp_path / "back").verify() == 6


def test_a_rerun_completes_the_store_like_collect(store_dir, minari_root, tmp_path):
    export_minari(store_dir, "wv/point-v0", progress=False)
    out = tmp_path / "back"
    import_minari("wv/point-v0", out, progress=False)
    assert import_minari("wv/point-v0", out, progress=False).new_episodes == 0
    (out / shard_name(1)).write_bytes(b"not hdf5")
    again = import_minari("wv/point-v0", out, progress=False)
    assert again.new_episodes == 3 and len(again.repaired) == 1
    assert same_stores(EpisodeStore(store_dir), EpisodeStore(out))
    other = tmp_path / "other"
    EpisodeStore.create(other, StoreSpec("test/Fake-v0", (8, 8, 3), 2, "test", 0)).close()
    with pytest.raises(StoreMismatchError, match="another configuration"):
        import_minari("wv/point-v0", other, progress=False)


def test_frames_stay_lossless_at_jpeg_sizes_and_a_store_without_goals_exports_plain_frames(minari_root, tmp_path):
    rng = np.random.default_rng(0)
    spec = StoreSpec("test/Fake-v0", (32, 32, 3), 2, "test", 0, episodes_per_shard=2)
    episodes = []
    for seed in range(3):  # noise frames of 32 px: Minari would JPEG-encode them, visibly
        ep = make_episode(steps=4, size=32, seed=seed)
        ep.frames[:] = rng.integers(0, 256, ep.frames.shape, dtype=np.uint8)
        episodes.append(ep)
    plain = [make_episode(steps=3, size=32, seed=s) for s in range(2)]
    plain = [type(ep)(**{**ep.__dict__, "goal_frame": None, "success": None}) for ep in plain]
    for name, eps in (("noise", episodes), ("plain", plain)):
        with EpisodeStore.create(tmp_path / name, spec) as store:
            store.write_episodes(eps)
        report = export_minari(tmp_path / name, f"wv/{name}-v0", progress=False)
        assert report.notes and "test/Fake-v0" in report.notes[0]  # no such env here: no env spec, said once
        import_minari(f"wv/{name}-v0", tmp_path / f"{name}-back", progress=False)
        assert same_stores(EpisodeStore(tmp_path / name), EpisodeStore(tmp_path / f"{name}-back"))
    assert isinstance(minari.load_dataset("wv/plain-v0").observation_space, gym.spaces.Box)
    assert minari.load_dataset("wv/plain-v0")[0].infos == {}


def test_a_failed_export_leaves_no_dataset_and_a_dead_exports_staging_is_removed(store_dir, minari_root, monkeypatch):
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) > 4:
            raise OSError("disk full")
        return buffer(*args)

    buffer = minari_io._buffer
    monkeypatch.setattr(minari_io, "_buffer", failing)
    with pytest.raises(OSError, match="disk full"):
        export_minari(store_dir, "wv/point-v0", progress=False)
    monkeypatch.setattr(minari_io, "_buffer", buffer)
    assert not (minari_root / "wv" / "point-v0").exists()
    dead = minari_root / ".worldvid-export.tmp999999999"
    (dead / "wv").mkdir(parents=True)
    export_minari(store_dir, "wv/point-v0", progress=False)
    assert not dead.exists() and minari.load_dataset("wv/point-v0").total_episodes == 6


def test_a_foreign_pixel_dataset_imports_with_its_seeds_one_hot_actions_and_no_goal(minari_root, tmp_path):
    frames = gym.spaces.Box(0, 255, (12, 10, 3), np.uint8)
    rng = np.random.default_rng(1)
    observations = [{"pixels": rng.integers(0, 256, (t + 1, 12, 10, 3), dtype=np.uint8),
                     "state": rng.normal(size=(t + 1, 2)).astype(np.float32)} for t in (3, 5)]
    actions = [np.array([0, 2, 1]), np.array([1, 1, 0, 2, 2])]
    space = gym.spaces.Dict({"pixels": frames, "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    foreign_dataset("other/pix-v0", space, observations, gym.spaces.Discrete(3), actions,
                    infos={"is_success": np.array([False, False, False, True])})
    with pytest.raises(ValueError, match=r"episode 1: infos\['is_success'\] holds 4 values for 5 steps"):
        import_minari("other/pix-v0", tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()  # checked before the store is made

    foreign_dataset("other/pix-v1", space, observations, gym.spaces.Discrete(3), actions)
    report = import_minari("other/pix-v1", tmp_path / "store", episodes_per_shard=1, progress=False)
    assert any("not recorded" in n for n in report.notes) and any("goal" in n for n in report.notes)
    store = EpisodeStore(tmp_path / "store")
    assert store.spec.env_id == "other/pix-v1" and store.spec.policy == "someone-elses"
    assert store.spec.frame_shape == (12, 10, 3) and store.spec.action_dim == 3
    ep = store.read_episode(1)
    assert np.array_equal(ep.frames, observations[1]["pixels"]) and ep.goal_frame is None and ep.success is None
    assert np.array_equal(ep.actions, np.eye(3, dtype=np.float32)[actions[1]]) and ep.seed == 1

    big = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)  # frames Minari JPEG-encodes by default, seeds recorded
    foreign_dataset("other/big-v0", big, [np.zeros((3, 32, 32, 3), np.uint8)] * 2, gym.spaces.Box(-1, 1, (1,)),
                    [np.zeros((2, 1), np.float32)] * 2, seeds=[5, 6])
    report = import_minari("other/big-v0", tmp_path / "big", progress=False)
    assert any("JPEG" in n for n in report.notes) and not any("seed" in n for n in report.notes)
    assert EpisodeStore(tmp_path / "big").spec.seed == 5 and EpisodeStore(tmp_path / "big").read_episode(1).seed == 6


def test_bad_inputs_are_refused_in_one_line(minari_root, tmp_path):
    with pytest.raises(ValueError, match="no local Minari dataset 'nope/x-v0'"):
        import_minari("nope/x-v0", tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="must look like NAMESPACE/NAME-v0"):
        import_minari("../up", tmp_path / "a", progress=False)
    state = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    foreign_dataset("other/state-v0", state, [np.zeros((3, 4), np.float32)], gym.spaces.Box(-1, 1, (1,)),
                    [np.zeros((2, 1), np.float32)])
    with pytest.raises(ValueError, match=r"has no pixel observations: found Box\(-inf, inf, \(4,\), float32\)"):
        import_minari("other/state-v0", tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldvid.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_cli_exports_and_imports_and_fails_in_one_line(store_dir, minari_root, tmp_path):
    done = cli("export", "--data", str(store_dir), "--format", "minari", "--dataset-id", "wv/cli-v0")
    assert done.returncode == 0, done.stderr
    assert "episodes    6" in done.stdout
    done = cli("import", "--dataset-id", "wv/cli-v0", "--out", str(tmp_path / "back"))
    assert done.returncode == 0 and "new_episodes" in done.stdout, done.stderr
    assert same_stores(EpisodeStore(store_dir), EpisodeStore(tmp_path / "back"))

    state = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    foreign_dataset("other/state-v0", state, [np.zeros((3, 4), np.float32)], gym.spaces.Box(-1, 1, (1,)),
                    [np.zeros((2, 1), np.float32)])
    bad = cli("import", "--dataset-id", "other/state-v0", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("worldvid import: error: Minari dataset 'other/state-v0' "
                                                          "has no pixel observations: found Box(")
    missing = subprocess.run(  # minari not installed: the same one line, naming the extra
        [sys.executable, "-c", "import sys; sys.modules['minari'] = None; from worldvid.cli import main; "
         f"sys.exit(main(['export', '--data', {str(store_dir)!r}, '--dataset-id', 'wv/no-v0']))"],
        capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "worldvid export: error: this needs the Minari extra: pip install worldvid[minari]" in missing.stderr

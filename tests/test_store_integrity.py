"""Episode stores under faults: checked manifests, verification, repair, kill -9 (one writer at a time:
tests/test_store_writers.py).

Every test runs on tiny stores (PointReach at 16 pixels, random policy) or on the synthetic episodes of
``conftest.make_episode``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_episode
from worldvid.cli import main
from worldvid.data.collect import collect
from worldvid.data.dataset import FrameWindowDataset
from worldvid.data.manifest import MANIFEST, ManifestError, is_temporary, shard_name
from worldvid.data.store import CorruptShardError, EpisodeStore, StoreSpec
from worldvid.locks import holds_lock

POINT = "worldvid/PointReach-v0"
TINY = dict(size=16, policy="random", seed=0, episodes_per_shard=2, progress=False)
"""4 episodes in 2 shards of 2."""


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldvid.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): what "nothing overwritten" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.h5"))}


def edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_text(json.dumps(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bits(path: Path) -> None:
    """Same size, bytes flipped in the middle third (the frame data)."""
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, 2 * len(data) // 3, 97):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted collect of 4 episodes: what every repaired store must equal, byte for byte."""
    root = tmp_path_factory.mktemp("reference") / "store"
    collect(POINT, 4, root, **TINY)
    return root


@pytest.fixture
def store(reference, tmp_path) -> Path:
    """A fresh copy of the reference store."""
    return Path(shutil.copytree(reference, tmp_path / "store"))


def synthetic_spec(**overrides) -> StoreSpec:
    return StoreSpec(**{**dict(env_id="test/Fake-v0", frame_shape=(8, 8, 3), action_dim=2, policy="test", seed=0,
                              episodes_per_shard=2), **overrides})


# ---------------------------------------------------------------- manifest safety
def _outside_shard(store: Path) -> Path:
    """A real shard file outside the store: what an unchecked manifest path would read."""
    outside = store.parent / "other" / "x.h5"
    outside.parent.mkdir()
    shutil.copy(store / shard_name(0), outside)
    return outside


@pytest.mark.parametrize("case, change, message", [
    ("absolute path", lambda d, out: d["shards"]["0"].update(file=str(out)),
     "shard entry '0', field 'file': '/.*x.h5' is not a plain file name inside the store folder"),
    ("dot-dot escape", lambda d, out: d["shards"]["0"].update(file="../other/x.h5"),
     "shard entry '0', field 'file': '../other/x.h5' is not a plain file name inside the store folder"),
    ("missing field", lambda d, out: d["shards"]["1"].pop("lengths"), "shard entry '1', field 'lengths': missing"),
    ("wrong type", lambda d, out: d["shards"]["1"].update(bytes="12"),
     "shard entry '1', field 'bytes': must be an integer >= 0, got '12'"),
    ("bool for an int", lambda d, out: d["shards"]["0"].update(first_episode=False),
     "shard entry '0', field 'first_episode': must be an integer >= 0"),
    ("another shard's file", lambda d, out: d["shards"]["1"].update(file=shard_name(0)),
     "shard entry '1', field 'file': must be 'shard_00001.h5'"),
    ("lists disagree", lambda d, out: d["shards"]["1"]["returns"].pop(),
     "shard entry '1', field 'returns': lists 1 episodes, 'lengths' lists 2"),
    ("spec field missing", lambda d, out: d["spec"].pop("action_dim"), "spec field 'action_dim' is missing"),
    ("spec field wrong", lambda d, out: d["spec"].update(frame_shape=[16, 16]), "spec field 'frame_shape' must be"),
])
def test_a_bad_manifest_is_refused_on_open_with_one_line(store, case, change, message):
    outside = _outside_shard(store)
    edit_manifest(store, lambda d: change(d, outside))
    before = files(store.parent)
    with pytest.raises(ManifestError, match=message) as err:
        EpisodeStore(store)
    assert str(store / MANIFEST) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(ManifestError, match=message):
        FrameWindowDataset(store)  # what training opens
    assert files(store.parent) == before


def test_a_shard_linked_to_a_file_outside_the_store_is_refused(store):
    outside = _outside_shard(store)
    (store / shard_name(0)).unlink()
    (store / shard_name(0)).symlink_to(outside)
    with pytest.raises(ManifestError, match="field 'file': 'shard_00000.h5' is not a plain file name inside"):
        EpisodeStore(store)


# ---------------------------------------------------------------- verification
def test_check_reports_every_broken_shard_by_name(store):
    assert EpisodeStore(store).check().ok and EpisodeStore(store).verify() == 4
    manifest = json.loads((store / MANIFEST).read_text())
    assert all(len(e["sha256"]) == 64 and e["bytes"] == (store / e["file"]).stat().st_size
               for e in manifest["shards"].values())
    flip_bits(store / shard_name(0))
    truncate(store / shard_name(1))
    report = EpisodeStore(store).check()
    assert not report.ok and report.broken_shards == [0, 1] and report.episodes == 0
    assert report.problems[0] == ["checksum mismatch: its bytes changed since it was written (sha256 differs from the "
                                  "manifest's)"]
    assert report.problems[1][0].startswith("truncated or changed: ")
    assert report.lines()[0].startswith(str(store / shard_name(0)))
    with pytest.raises(CorruptShardError, match=shard_name(0)):
        EpisodeStore(store).verify()


def test_old_manifests_without_checksums_are_verified_by_reading_every_byte(store):
    edit_manifest(store, lambda d: [e.pop("sha256") for e in d["shards"].values()])
    assert EpisodeStore(store).check().ok
    flip_bits(store / shard_name(1))
    report = EpisodeStore(store).check()
    assert report.broken_shards == [1] and "cannot be read" in report.problems[1][0], report.lines()


def test_check_compares_episode_lengths_with_the_arrays(store):
    edit_manifest(store, lambda d: d["shards"]["1"]["lengths"].__setitem__(0, 7))
    report = EpisodeStore(store).check()
    assert report.broken_shards == [1]
    assert "episode 2: frames is uint8 [51, 16, 16, 3], expected uint8 [8, 16, 16, 3] (the manifest says T = 7)" in \
        report.problems[1][0]


def test_check_reports_a_missing_shard_and_notes_leftovers(store):
    (store / shard_name(1)).unlink()
    (store / "shard_00001.h5.tmp4242").write_bytes(b"half")
    report = EpisodeStore(store).check()
    assert report.problems == {1: ["missing (the manifest lists it)"]} and report.unlisted == ["shard_00001.h5.tmp4242"]


# ---------------------------------------------------------------- worldvid verify
def test_verify_command_on_a_clean_and_a_broken_store(store, capsys):
    assert main(["verify", str(store)]) == 0
    assert capsys.readouterr().out.strip() == f"ok: episode store {store}: 4 episodes in 2 shards"
    flip_bits(store / shard_name(1))
    before = files(store)
    assert main(["verify", str(store)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{store / shard_name(1)}: checksum mismatch: its bytes changed since it was written (sha256 "
                   "differs from the manifest's)", f"broken: episode store {store}: 1 problem"]
    assert files(store) == before


@pytest.mark.parametrize("fault", ["truncated", "bit flip", "escaping path", "missing field"])
def test_verify_command_gives_one_line_per_fault_and_no_traceback(store, fault):
    if fault == "truncated":
        truncate(store / shard_name(0))
    elif fault == "bit flip":
        flip_bits(store / shard_name(0))
    elif fault == "escaping path":
        edit_manifest(store, lambda d: d["shards"]["0"].update(file="../../x.h5"))
    else:
        edit_manifest(store, lambda d: d["shards"]["0"].pop("bytes"))
    before = files(store)
    done = cli("verify", str(store), timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("broken: episode store")
    expected = {"truncated": "truncated or changed", "bit flip": "checksum mismatch",
                "escaping path": "field 'file': '../../x.h5' is not a plain file name inside the store folder",
                "missing field": "shard entry '0', field 'bytes': missing"}[fault]
    assert expected in lines[0]
    assert files(store) == before


def _run_folder(root: Path) -> Path:
    from safetensors.numpy import save_file

    (root / "model").mkdir(parents=True)
    (root / "train_config.json").write_text(json.dumps({"train": {"steps": 1}}))
    (root / "model" / "config.json").write_text(json.dumps({"frame_size": 16}))
    save_file({"w": np.zeros((4, 3), np.float32), "b": np.ones(3, np.float32)}, str(root / "model" / "model.safetensors"))
    (root / "training_state.pt").write_bytes(b"not read by verify")
    return root


def test_verify_command_on_run_and_model_folders(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    assert main(["verify", str(run)]) == 0
    assert capsys.readouterr().out.strip().startswith(f"ok: run folder {run}: 2 tensors")
    assert main(["verify", str(run / "model")]) == 0
    assert capsys.readouterr().out.strip().startswith(f"ok: model folder {run / 'model'}")
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    (run / "train_config.json").write_text("{ torn")
    (run / "training_state.pt").unlink()
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4 and out[-1] == f"broken: run folder {run}: 3 problems"
    assert out[0].startswith(f"{run / 'train_config.json'}: not valid JSON")
    assert out[1].startswith(f"{weights}: tensor") and "truncated" in out[1]
    assert out[2] == f"{run / 'training_state.pt'}: missing (the run cannot be resumed)"


def test_verify_command_refuses_what_is_not_a_store_or_run(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "is not an episode store" in capsys.readouterr().err


# ---------------------------------------------------------------- collect repairs
def test_collect_sets_aside_broken_shards_and_repairs_them_bit_identically(store, reference, capsys):
    flip_bits(store / shard_name(0))
    truncate(store / shard_name(1))
    broken = {name: (store / name).read_bytes() for name in (shard_name(0), shard_name(1))}
    (store / "shard_00007.h5.tmp999999").write_bytes(b"a dead writer's")
    (store / ".manifest.json.tmp999999").write_text("{")
    report = collect(POINT, 4, store, **TINY)
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["warning"] * 2
    assert f"{store / shard_name(0)}: checksum mismatch" in err[0] and "collecting its episodes again" in err[0]
    assert f"{store / shard_name(1)}: truncated or changed" in err[1]
    assert len(report.repaired) == 2 and report.new_episodes == 4
    assert shard_bytes(store) == shard_bytes(reference)
    assert json.loads((store / MANIFEST).read_text()) == json.loads((reference / MANIFEST).read_text())
    assert {p.name: p.read_bytes() for p in (store / "broken").iterdir()} == broken  # set aside, not lost
    assert not [n for n in os.listdir(store) if is_temporary(n)]
    assert EpisodeStore(store).check(full=True).ok


def test_collect_repairs_old_stores_by_reading_them(store, reference):
    edit_manifest(store, lambda d: [e.pop("sha256") for e in d["shards"].values()])
    flip_bits(store / shard_name(1))
    report = collect(POINT, 4, store, **TINY)
    assert report.new_episodes == 2 and "cannot be read" in report.repaired[0]
    assert shard_bytes(store) == shard_bytes(reference)
    assert EpisodeStore(store).check(full=True).ok


@pytest.mark.parametrize("fault", ["escaping path", "missing field"])
def test_collect_refuses_a_bad_manifest_and_overwrites_nothing(store, fault):
    if fault == "escaping path":
        edit_manifest(store, lambda d: d["shards"]["1"].update(file="/etc/passwd"))
    else:
        edit_manifest(store, lambda d: d["shards"]["1"].pop("first_episode"))
    before = files(store)
    done = cli("collect", "--env", POINT, "--episodes", "4", "--size", "16", "--policy", "random",
               "--episodes-per-shard", "2", "--out", str(store))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{store / MANIFEST}: shard entry '1', field " in lines[0]
    assert files(store) == before
    assert not holds_lock(store)


def test_training_data_opening_names_a_broken_shard_in_one_line(store):
    truncate(store / shard_name(1))
    data = FrameWindowDataset(store)
    data[0]
    with pytest.raises(CorruptShardError, match=f"{shard_name(1)} is truncated or was changed") as err:
        data[len(data) - 1]
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- kill -9
@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("long") / "store"
    collect(POINT, 30, root, size=16, policy="random", episodes_per_shard=1, progress=False)
    return root


@pytest.mark.parametrize("seed", [14, 15])
def test_collect_killed_at_a_seeded_point_then_rerun_equals_an_uninterrupted_collect(tmp_path, long_reference, seed):
    kill_after = int(np.random.default_rng(seed).integers(1, 12))  # shards listed when the kill comes
    out = tmp_path / "killed"
    args = ["collect", "--env", POINT, "--episodes", "30", "--size", "16", "--episodes-per-shard", "1", "--policy",
            "random", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "worldvid.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if len(json.loads((out / MANIFEST).read_text())["shards"]) >= kill_after:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.005)
    assert proc.poll() is None, "collection finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = EpisodeStore(out).check(full=True)
    assert partial.ok and kill_after <= partial.episodes < 30, partial.lines()
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert shard_bytes(out) == shard_bytes(long_reference)
    assert json.loads((out / MANIFEST).read_text()) == json.loads((long_reference / MANIFEST).read_text())
    assert not [n for n in os.listdir(out) if is_temporary(n)] and not (out / "broken").exists()
    assert EpisodeStore(out).check().ok and not holds_lock(out)

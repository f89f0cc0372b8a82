"""Training state and run folders under crashes, concurrency and bad input (issue 14).

Loading a checkpoint never runs code; nothing is written before the configs, data and loader are checked; a
resume takes only the overrides it may; one writer per run; model folders and metrics survive a kill at any
point; a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import fast, tiny_config, wait_for_metric_rows
from worldvid.checkpoint import TRAINING_STATE, CheckpointError, load_training_state, save_training_state
from worldvid.data.collect import collect
from worldvid.locks import FolderLockedError
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.optim import MetricsLog, read_metrics
from worldvid.run_folder import RunFolder
from worldvid.train import TrainConfig, train

TINY_FLAGS = ["--channels", "8", "16", "--time-embed-dim", "32", "--action-embed-dim", "32", "--denoise-steps", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldvid.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


class _Payload:
    """Unpickling this creates (truncates) ``marker``: what a crafted training_state.pt could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_payload(run: Path, marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {}, "step": 1, "rng": _Payload(str(marker))}, buffer)
    (run / TRAINING_STATE).write_bytes(buffer.getvalue())
    return buffer.getvalue()


# ---------------------------------------------------------------------------- 1. loading never executes code
def test_rng_states_round_trip_exactly_and_need_no_allow_list(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # cached Gaussians are part of the state too
    save_training_state(tmp_path, {"model": {"w": torch.arange(3.0)}, "step": 5})
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
                torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = load_training_state(tmp_path)
    assert (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
            torch.rand(3).tolist()) == expected
    assert state["step"] == 5 and torch.equal(state["model"]["w"], torch.arange(3.0))
    torch.load(tmp_path / TRAINING_STATE, weights_only=True)  # plain weights-only load: no allow-list needed


def test_checkpoints_with_numpy_rng_arrays_still_load(tmp_path):
    np.random.seed(4)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = np.random.rand(2).tolist()
    torch.save({"model": {}, "step": 2, "rng": old}, tmp_path / TRAINING_STATE)  # the format before this change
    np.random.seed(0)
    assert load_training_state(tmp_path)["step"] == 2 and np.random.rand(2).tolist() == expected


@pytest.mark.parametrize("damage", ["payload", "garbage", "truncated", "not_a_state"])
def test_a_bad_checkpoint_is_refused_by_name_and_never_runs(tmp_path, damage):
    marker = tmp_path / "marker"
    if damage == "payload":
        data = _plant_payload(tmp_path, marker)
    else:
        save_training_state(tmp_path, {"model": {"w": torch.randn(64, 64)}, "step": 3})
        good = (tmp_path / TRAINING_STATE).read_bytes()
        data = {"garbage": os.urandom(4096), "truncated": good[: len(good) // 2], "not_a_state": None}[damage]
        if damage == "not_a_state":
            buffer = io.BytesIO()
            torch.save([1, 2, 3], buffer)
            data = buffer.getvalue()
        (tmp_path / TRAINING_STATE).write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        load_training_state(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / TRAINING_STATE) in message
    assert "corrupt or not a worldvid checkpoint" in message
    assert not marker.exists() and (tmp_path / TRAINING_STATE).read_bytes() == data


def test_cli_resume_from_a_crafted_checkpoint_is_one_line_and_runs_nothing(store_dir, tmp_path):
    run = tmp_path / "run"
    train(store_dir, run, fast(1), tiny_config(), progress=False)
    marker = tmp_path / "marker"
    data = _plant_payload(run, marker)
    done = cli("train", "--data", str(store_dir), "--out", str(run), "--resume")
    assert "corrupt or not a worldvid checkpoint" in one_line_error(done)
    assert not marker.exists() and (run / TRAINING_STATE).read_bytes() == data


# ---------------------------------------------------------------------------- 2. validate before writing
def test_bad_settings_and_bad_shards_write_nothing_and_a_fixed_rerun_starts(store_dir, tmp_path):
    run = tmp_path / "run"
    done = cli("train", "--data", str(store_dir), "--out", str(run), "--num-workers", "-1", *TINY_FLAGS)
    assert "num_workers" in one_line_error(done) and not run.exists()
    with pytest.raises(ValueError, match="num_workers"):
        fast(1, num_workers=-1)

    broken = tmp_path / "broken"
    collect("worldvid/PointReach-v0", 6, broken, size=16, episodes_per_shard=3, progress=False)
    shard = sorted(broken.glob("shard_*.h5"))[-1]  # the shard of the held-out episodes: validation reads it too
    good = shard.read_bytes()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for bad in (good[: len(good) // 2], b"\0garbage" * (len(good) // 8) + b"\0" * (len(good) % 8)):
        shard.write_bytes(bad)
        for out in (run, existing):
            with pytest.raises(RuntimeError, match=shard.name):
                train(broken, out, fast(2), tiny_config(), progress=False)
        assert not run.exists() and [p.name for p in existing.iterdir()] == ["notes.txt"]
    shard.write_bytes(good)
    assert train(broken, run, fast(2), tiny_config(), progress=False)["steps"] == 2  # no --resume needed


# ---------------------------------------------------------------------------- 3. resume overrides
def test_resume_applies_allowed_overrides_and_refuses_the_rest_by_name(store_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(store_dir, run, fast(2, lr=2e-3), tiny_config(), progress=False)
    state = (run / TRAINING_STATE).read_bytes()
    with pytest.raises(ValueError) as err:
        train(store_dir, run, fast(4, lr=5e-3, seed=7), resume=True, progress=False)
    assert "lr 0.002 -> 0.005" in str(err.value) and "seed 0 -> 7" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="other data"):
        train([store_dir, store_dir], run, fast(4), resume=True, progress=False)
    assert (run / TRAINING_STATE).read_bytes() == state
    # what the CLI passes: every field, most at their defaults (which mean "as saved")
    summary = train(store_dir, run, TrainConfig(steps=4, log_every=2), resume=True, progress=False)
    saved = json.loads((run / "train_config.json").read_text())["train"]
    assert summary["steps"] == 4 and (saved["steps"], saved["log_every"], saved["lr"], saved["batch_size"]) == (4, 2, 2e-3, 4)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 4]


def test_resume_and_init_refuse_architecture_options_that_would_change_the_model(store_dir, tmp_path):
    run, tuned = tmp_path / "run", tmp_path / "tuned"
    train(store_dir, run, fast(1), tiny_config(), progress=False)
    state = (run / TRAINING_STATE).read_bytes()
    base = ["train", "--data", str(store_dir), "--train-steps", "1", "--batch-size", "4", "--held-out-fraction", "0.2"]
    line = one_line_error(cli(*base, "--out", str(tuned), "--init", str(run), *TINY_FLAGS, "--objective", "regression"))
    assert "--init" in line and "--objective regression (it has diffusion)" in line and "--channels" not in line
    assert not tuned.exists()
    line = one_line_error(cli(*base, "--out", str(run), "--resume", "--channels", "8", "32"))
    assert "--resume" in line and "--channels 8 32 (it has 8 16)" in line
    assert (run / TRAINING_STATE).read_bytes() == state
    done = cli(*base, "--out", str(tuned), "--init", str(run), *TINY_FLAGS)  # the model's own values: accepted
    assert done.returncode == 0, done.stderr
    assert WorldModel.from_pretrained(tuned / "model").config == tiny_config()


def test_train_cost_resume_refuses_architecture_options_that_would_change_the_distance(store_dir, tmp_path):
    from worldvid.goal_distance import GoalDistanceConfig, GoalDistanceTrainConfig, train_goal_distance

    cost = tmp_path / "cost"
    train_goal_distance(store_dir, cost, GoalDistanceTrainConfig(steps=1, batch_size=4),
                        GoalDistanceConfig(frame_size=16, widths=(4, 8, 8), hidden=16, embed_dim=8), progress=False)
    state = (cost / TRAINING_STATE).read_bytes()
    base = ["train-cost", "--data", str(store_dir), "--out", str(cost), "--resume", "--batch-size", "4"]
    line = one_line_error(cli(*base, "--train-steps", "2", "--widths", "8", "16", "16", "--hidden", "16"))
    assert "--resume" in line and "--widths 8 16 16 (it has 4 8 8)" in line and "--hidden" not in line
    assert (cost / TRAINING_STATE).read_bytes() == state
    done = cli(*base, "--train-steps", "2", "--widths", "4", "8", "8")  # the distance's own values: accepted
    assert done.returncode == 0, done.stderr
    assert json.loads((cost / "train_config.json").read_text())["train"]["steps"] == 2


# ---------------------------------------------------------------------------- 4. one writer
HOLD = """
import sys, time
from worldvid.locks import folder_lock
with folder_lock(sys.argv[1], "train"), folder_lock(sys.argv[2], "train-cost"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_before_writing(store_dir, tmp_path):
    from worldvid.goal_distance import GoalDistanceConfig, GoalDistanceTrainConfig, train_goal_distance

    run, cost = tmp_path / "run", tmp_path / "cost"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(cost)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            train(store_dir, run, fast(1), tiny_config(), progress=False)
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            train_goal_distance(store_dir, cost, GoalDistanceTrainConfig(steps=1, batch_size=4),
                                GoalDistanceConfig(frame_size=16, widths=(4, 8, 8), hidden=16, embed_dim=8), progress=False)
        done = cli("train", "--data", str(store_dir), "--out", str(run), *TINY_FLAGS)
        assert f"in use by train (pid {holder.pid}" in one_line_error(done)
        assert sorted(p.name for p in run.iterdir()) == [".worldvid.lock"] == sorted(p.name for p in cost.iterdir())
    finally:
        holder.kill()
        holder.wait(timeout=10)


# ---------------------------------------------------------------------------- 5a. model folder swap
KILL_BETWEEN_RENAMES = """
import os, signal, sys, torch
import worldvid.model.pretrained as pretrained
from worldvid.model import WorldModel, WorldModelConfig
config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), time_embed_dim=32, action_embed_dim=32)
torch.manual_seed(0)
WorldModel(config).save_pretrained(sys.argv[1])
real_replace = pretrained.os.replace
def replace_then_die(src, dst):  # the first rename of the swap happens, the second never does
    real_replace(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
pretrained.os.replace = replace_then_die
torch.manual_seed(1)
WorldModel(config).save_pretrained(sys.argv[1])
"""


def test_a_kill_between_the_two_renames_of_a_model_save_loses_nothing(tmp_path):
    path = tmp_path / "run" / "model"
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(path)], env=ENV, timeout=120)
    assert done.returncode == -signal.SIGKILL and not path.exists()
    left = sorted(p.name.split("-")[0] for p in path.parent.iterdir())
    assert left == [".model.old", ".model.tmp"]
    torch.manual_seed(1)
    newest = WorldModel(WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), time_embed_dim=32,
                                         action_embed_dim=32)).state_dict()
    # readers find the new model where the kill left it, without writing
    loaded = RunFolder.of(path.parent).load_model().state_dict()
    assert all(torch.equal(loaded[k], newest[k]) for k in newest) and not path.exists()
    # the next writer puts it in place and removes the dead writer's leftovers
    RunFolder.new(path.parent).remove_leftovers()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]
    loaded = WorldModel.from_pretrained(path).state_dict()
    assert all(torch.equal(loaded[k], newest[k]) for k in newest)


def test_an_incomplete_new_folder_falls_back_to_the_previous_one(tmp_path):
    path = tmp_path / "model"
    torch.manual_seed(0)
    model = WorldModel(tiny_config())
    model.save_pretrained(path)
    os.replace(path, tmp_path / ".model.old-999999999-a")  # a kill between the renames of a save whose new
    torn = tmp_path / ".model.tmp-999999999-b"  # folder lost its weights' tail (never the case: it is synced first)
    model.save_pretrained(torn)
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    loaded = WorldModel.from_pretrained(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    model.save_pretrained(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------------------- 5b. metrics
def test_a_torn_last_metrics_line_is_dropped_and_other_bad_lines_are_named(tmp_path):
    run = RunFolder.new(tmp_path)
    log = MetricsLog(run, 0)
    for step in (1, 2, 3):
        log.add({"step": step, "loss": 1.0 / step})
    log.close()
    with open(run.metrics_jsonl, "a") as f:
        f.write('{"step": 4, "lo')  # a kill in the middle of an append
    with pytest.warns(UserWarning, match="torn last line 4"):
        log = MetricsLog(run, 2)  # resuming from a step-2 checkpoint
    log.add({"step": 3, "loss": 0.5})
    assert [r["step"] for r in read_metrics(run.metrics_jsonl)] == [1, 2, 3]
    assert run.metrics_csv.read_text().splitlines() == ["step,loss", "1,1.0", "2,0.5", "3,0.5"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    lines = run.metrics_jsonl.read_text().splitlines()
    run.metrics_jsonl.write_text("\n".join([lines[0], "not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=rf"{run.metrics_jsonl}: line 2 is not a metrics row"):
        MetricsLog(run, 3)


# ---------------------------------------------------------------------------- 6. kill -9 and resume
def test_sigkill_during_training_then_resume_is_bit_identical(store_dir, tmp_path):
    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "worldvid.cli", "train", "--data", str(store_dir), "--out", str(out),
                "--train-steps", "30", "--batch-size", "4", "--warmup-steps", "2", "--checkpoint-every", "4",
                "--log-every", "1", "--held-out-fraction", "0.2", *TINY_FLAGS, *extra]

    full, part = tmp_path / "full", tmp_path / "part"
    killed = subprocess.Popen(command(part), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    wait_for_metric_rows(part / "metrics.jsonl", 6, killed, 120)  # the step-4 checkpoint is written: kill mid-run
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    assert load_training_state(part, restore_rng=False)["step"] in range(4, 30)
    done = subprocess.run(command(part, "--resume"), capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs (OMP_NUM_THREADS=1): the uninterrupted run, in this process
    try:
        train(store_dir, full, fast(30, checkpoint_every=4), tiny_config(), progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(full / "model" / "model.safetensors"), load_file(part / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert [r["loss"] for r in read_metrics(full / "metrics.jsonl")] == [r["loss"] for r in read_metrics(part / "metrics.jsonl")]
    leftovers = [p.name for p in part.iterdir() if ".tmp" in p.name or ".old" in p.name]
    assert not leftovers and sorted(p.name for p in part.iterdir()) == sorted(p.name for p in full.iterdir())

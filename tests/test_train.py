"""Training: bit-identical resume, divergence and overwrite errors, metrics; evaluation plumbing; CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import TINY, fast, make_episode, tiny_config
import worldvid.train
from worldvid.checkpoint import CheckpointError
from worldvid.data.collect import collect
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.evaluate import cut_windows
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.train import TrainingDivergedError, train


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "training_state.pt", weights_only=False)


def test_resume_is_bit_identical_to_an_uninterrupted_run(store_dir, tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(store_dir, full, fast(6), tiny_config(), progress=False)
    part = tmp_path / "part"
    calls = []
    real_update = worldvid.train.update_ema

    def killed_at_step_5(*args):  # the run dies after its step-3 checkpoint and a logged step 4
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        real_update(*args)

    monkeypatch.setattr(worldvid.train, "update_ema", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(store_dir, part, fast(6), tiny_config(), progress=False)
    monkeypatch.undo()
    assert weights(part)["step"] == 3
    summary = train(store_dir, part, fast(6), resume=True, progress=False)
    assert summary["steps"] == 6
    a, b = weights(full), weights(part)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    rows = lambda run: [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["loss"] for r in rows(full)] == [r["loss"] for r in rows(part)]
    assert (full / "metrics.csv").read_text().count("\n") == 7  # header + 6 rows
    # the saved model is the EMA, loadable and configured as trained
    model = WorldModel.from_pretrained(part / "model", frame_size=16, action_dim=2)
    assert model.config == tiny_config()


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(store_dir, tmp_path):
    run = tmp_path / "run"
    train(store_dir, run, fast(1), tiny_config(), progress=False)
    before = (run / "training_state.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a training run"):
        train(store_dir, run, fast(2), tiny_config(), progress=False)
    assert (run / "training_state.pt").read_bytes() == before
    with pytest.raises((CheckpointError, FileNotFoundError)):
        train(store_dir, tmp_path / "nothing", fast(2), resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(store_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(store_dir, run, fast(3), tiny_config(), progress=False)
    good = weights(run)
    monkeypatch.setattr(WorldModel, "loss", lambda self, *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 3"):
        train(store_dir, run, fast(6), resume=True, progress=False)
    assert weights(run)["step"] == good["step"] == 3


def test_model_and_data_must_agree(store_dir, tmp_path):
    with pytest.raises(ValueError, match="16, 16, 3.*32x32"):
        train(store_dir, tmp_path / "r", fast(1), WorldModelConfig(action_dim=2, frame_size=32, **TINY), progress=False)
    with pytest.raises(ValueError, match="is for worldvid/Push-v0"):
        train(store_dir, tmp_path / "r", fast(1), tiny_config().replace(env_id="worldvid/Push-v0"), progress=False)


def test_open_loop_windows_pair_frames_and_actions(tmp_path):
    store = EpisodeStore.create(tmp_path, StoreSpec("test/Fake-v0", (8, 8, 3), 2, "test", 0, episodes_per_shard=1))
    store.write_shard(0, [make_episode(steps=7, seed=0)])
    w = cut_windows(store, [0], context=3, horizon=4, starts_per_episode=2)  # starts t = 0 and t = 3
    assert w.context.shape == (2, 3, 8, 8, 3) and w.real.shape == (2, 4, 8, 8, 3)
    assert w.context[1, :, 0, 0, 0].tolist() == [10, 20, 30]  # f[1..3]
    assert w.past_actions[1, :, 0].tolist() == [0, 1, 2]  # a[0..2], the actions that led into f[1..3]
    assert w.actions[1, :, 0].tolist() == [3, 4, 5, 6]  # a[3..6]
    assert w.real[1, :, 0, 0, 0].tolist() == [40, 50, 60, 70]  # f[4..7]
    assert w.context[0, :, 0, 0, 0].tolist() == [0, 0, 0] and w.past_actions[0].sum() == 0  # padded start
    assert w.episode.tolist() == [0, 0]


def test_cli_train_then_evaluate(store_dir, tmp_path):
    run = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", **{k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}}
    cmd = [sys.executable, "-m", "worldvid.cli", "train", "--data", str(store_dir), "--out", str(run), "--train-steps", "3",
           "--batch-size", "4", "--channels", "8", "16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "--resume" in again.stderr
    done = subprocess.run([sys.executable, "-m", "worldvid.cli", "evaluate", "--model", str(run), "--rollout-steps", "4",
                           "--control-seeds", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "copy" in done.stdout and "controllability" in done.stdout
    report = json.loads((run / "eval.json").read_text())
    assert report["episodes"] == [5] and report["horizon"] == 4
    assert len(report["model"]["psnr"]) == 4 and len(report["copy_last_frame"]["goal_object_error_px"]) == 4
    assert np.isfinite(report["model"]["object_error_px"]).all()
    assert set(report["controllability"]) >= {"matched", "real_divergence", "imagined_divergence", "passed"}


def test_training_mixes_several_stores_by_weight(store_dir, tmp_path):
    other = tmp_path / "other"
    collect("worldvid/PointReach-v0", 5, other, size=16, episodes_per_shard=5, seed=100, policy="random", progress=False)
    sampler = worldvid.train._StepBatches([10, 1000], 64, seed=0, start=0, steps=20, weights=(1.0, 1.0))
    drawn = torch.tensor([i for batch in sampler for i in batch])
    assert 0.4 < float((drawn < 10).float().mean()) < 0.6  # half from the 10-window store, not 1%
    assert int(drawn.max()) < 1010
    assert list(worldvid.train._StepBatches([10, 1000], 8, 0, 0, 5, weights=(0.0, 1.0)))[0] != []
    assert all(i >= 10 for batch in worldvid.train._StepBatches([10, 1000], 8, 0, 0, 5, (0.0, 1.0)) for i in batch)
    run = tmp_path / "run"
    summary = train([store_dir, other], run, fast(2, data_weights=(1.0, 3.0)), tiny_config(), progress=False)
    saved = json.loads((run / "train_config.json").read_text())
    assert [s["data"] for s in saved["stores"]] == [str(store_dir.resolve()), str(other.resolve())]
    assert saved["stores"][1]["held_out_episodes"] == [4] and saved["train"]["data_weights"] == [1.0, 3.0]
    assert summary["train_episodes"] == 5 + 4
    from worldvid.run_folder import RunFolder
    assert RunFolder.of(run).held_out_episodes(EpisodeStore(other)) == [4]  # evaluating on either store skips what was trained on
    assert RunFolder.of(run).held_out_episodes(EpisodeStore(store_dir)) == saved["held_out_episodes"]
    with pytest.raises(ValueError, match="2 data weights for 1 episode stores"):
        train(store_dir, tmp_path / "r", fast(1, data_weights=(1.0, 1.0)), tiny_config(), progress=False)
    with pytest.raises(ValueError, match="data_weights must be non-negative"):
        fast(1, data_weights=(0.0, 0.0))
    push = tmp_path / "push"
    collect("worldvid/Push-v0", 2, push, size=16, episodes_per_shard=2, progress=False)
    with pytest.raises(ValueError, match="the data holds worldvid/PointReach-v0, worldvid/Push-v0 but the model is for worldvid/PointReach-v0"):
        train([store_dir, push], tmp_path / "r", fast(1), tiny_config(), progress=False)


def test_fine_tuning_starts_from_another_runs_weights(store_dir, tmp_path):
    base = tmp_path / "base"
    train(store_dir, base, fast(3, seed=1), tiny_config(), progress=False)  # initial weights unlike seed 0's
    start = WorldModel.from_pretrained(base / "model").state_dict()
    tuned = tmp_path / "tuned"
    train(store_dir, tuned, fast(1, lr=1e-9), init_from=base, progress=False)  # a negligible step from there
    after = WorldModel.from_pretrained(tuned / "model").state_dict()
    assert max(float((after[k] - start[k]).abs().max()) for k in start) < 1e-5
    assert json.loads((tuned / "train_config.json").read_text())["init_from"] == str(base.resolve())
    fresh = tmp_path / "fresh"
    train(store_dir, fresh, fast(1, lr=1e-9), tiny_config(), progress=False)
    scratch = WorldModel.from_pretrained(fresh / "model").state_dict()
    assert max(float((scratch[k] - start[k]).abs().max()) for k in start) > 1e-2
    with pytest.raises(ValueError, match="takes that model's configuration"):
        train(store_dir, tmp_path / "r", fast(1), tiny_config(), init_from=base, progress=False)


def test_autocast_by_default_only_where_bf16_is_native(store_dir, tmp_path):
    """``TrainConfig.autocast`` None trains exactly as the explicit setting ``native_bf16`` picks for the CPU (bf16
    emulated on a CPU without AVX512-BF16/AMX made a step 10x slower), and the other setting trains otherwise."""
    from worldvid.device import native_bf16

    native = native_bf16("cpu")
    weights = {}
    for name, autocast in (("auto", None), ("same", native), ("other", not native)):
        train(store_dir, tmp_path / name, fast(2, autocast=autocast), tiny_config(), progress=False)
        weights[name] = WorldModel.from_pretrained(tmp_path / name / "model").state_dict()
    assert all(torch.equal(weights["auto"][k], weights["same"][k]) for k in weights["auto"])
    assert not all(torch.equal(weights["auto"][k], weights["other"][k]) for k in weights["auto"])

"""Experiment tracking: TensorBoard event files through tensorboardX (read back here), W&B offline runs, no
tracker, and a bad or missing tracker refused in one line before anything is written."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import fast, tiny_config
from worldvid.cli import main
from worldvid.goal_distance import GoalDistanceConfig, GoalDistanceTrainConfig, train_goal_distance
from worldvid.tracking import LOGGERS, TrackerUnavailableError, resolve_logger
from worldvid.train import TrainConfig, train

METRICS = {"loss", "lr", "grad_norm", "samples_per_s"}


def read_events(folder: Path) -> list:
    """Every tensorboard Event in the event files under ``folder`` (TFRecord framing: length u64, its crc u32,
    payload, the payload's crc u32), parsed with tensorboardX's protobufs."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            length = int.from_bytes(data[pos:pos + 8], "little")
            events.append(Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return events


def scalars_and_images(folder: Path) -> tuple[dict[str, list[int]], dict[str, dict[int, np.ndarray]]]:
    """({tag: [steps]}, {tag: {step: image uint8 [H, W, 3]}}) of the event files under ``folder``."""
    from PIL import Image

    scalars: dict[str, list[int]] = {}
    images: dict[str, dict[int, np.ndarray]] = {}
    for event in read_events(folder):
        for value in event.summary.value:
            if value.HasField("image"):
                images.setdefault(value.tag, {})[event.step] = np.asarray(
                    Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))
            else:
                scalars.setdefault(value.tag, []).append(event.step)
    return scalars, images


def test_tensorboardx_events_hold_every_row_and_a_picture_at_each_checkpoint(store_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the tensorboardX path, even with tensorboard
    run = tmp_path / "tb"
    train(store_dir, run, fast(6, logger="tensorboard"), tiny_config(), progress=False)
    scalars, images = scalars_and_images(run / "tensorboard")
    assert set(scalars) == METRICS and all(steps == [1, 2, 3, 4, 5, 6] for steps in scalars.values())
    assert set(images) == {"imagined"} and sorted(images["imagined"]) == [3, 6]  # the checkpoints (every 3)
    picture = images["imagined"][6]
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1] > picture.shape[0] >= 4 * 64
    loss = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    tb_loss = [v.simple_value for e in read_events(run / "tensorboard") for v in e.summary.value if v.tag == "loss"]
    assert np.allclose(tb_loss, loss)

    quiet = tmp_path / "none"  # no tracker: no tracker files, and the same weights (the picture draws no RNG)
    train(store_dir, quiet, fast(6, logger="none"), tiny_config(), progress=False)
    assert not (quiet / "tensorboard").exists() and not (quiet / "wandb").exists()
    a, b = (torch.load(r / "training_state.pt", weights_only=False) for r in (run, quiet))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # a resumed run may change its tracker: the event files then continue from the checkpoint
    train(store_dir, quiet, fast(9, logger="tensorboard"), resume=True, progress=False)
    scalars, images = scalars_and_images(quiet / "tensorboard")
    assert scalars["loss"] == [7, 8, 9] and sorted(images["imagined"]) == [9]
    assert json.loads((quiet / "train_config.json").read_text())["train"]["logger"] == "tensorboard"


def test_goal_distance_training_logs_its_rows_to_tensorboard(store_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "cost"
    config = GoalDistanceTrainConfig(steps=2, batch_size=4, log_every=1, logger="tensorboard")
    train_goal_distance(store_dir, run, config,
                        GoalDistanceConfig(frame_size=16, widths=(4, 8, 8), hidden=16, embed_dim=8), progress=False)
    scalars, images = scalars_and_images(run / "tensorboard")
    assert scalars["loss"] == [1, 2] and scalars["lr"] == [1, 2] and not images


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB log
    framing in 32 KiB blocks (crc u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunk, pos = [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(chunk))
            chunk = b""
    return records


def wandb_history(run_file: Path) -> list[dict[str, str]]:
    """The logged rows of a W&B run file: {key: JSON value} (nested keys joined with '/')."""
    return [{"/".join(item.nested_key) or item.key: item.value_json for item in record.history.item}
            for record in wandb_records(run_file) if record.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_logs_rows_and_pictures_and_a_resumed_run_continues_it(store_dir, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    run = tmp_path / "run"
    train(store_dir, run, fast(3, logger="wandb"), tiny_config(), progress=False)
    run_id = json.loads((run / "wandb_run.json").read_text())["id"]
    train(store_dir, run, fast(6), resume=True, progress=False)  # the saved logger: wandb, the same run
    wandb.teardown()  # run.finish() may return before W&B's service process has written the run file
    assert not (run / "tensorboard").exists() and not (run / "wandb").exists()  # W&B's files went to WANDB_DIR
    folders = sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    first, resumed = (wandb_history(f / f"run-{run_id}.wandb") for f in folders)
    rows = [r for r in first if "loss" in r]
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(METRICS <= set(r) for r in rows)
    pictures = [r for r in first + resumed if "imagined/_type" in r]
    assert [int(r["step"]) for r in pictures] == [3, 6] and json.loads(pictures[0]["imagined/_type"]) == "image-file"
    assert [int(r["step"]) for r in resumed if "loss" in r] == [4, 5, 6]
    assert list((folders[0] / "files" / "media" / "images").glob("imagined_*.png"))


def test_a_bad_or_missing_tracker_fails_in_one_line_before_anything_is_written(store_dir, tmp_path, monkeypatch,
                                                                               capsys):
    with pytest.raises(ValueError, match="logger must be one of auto, tensorboard, wandb, none; got 'tensorbord'"):
        TrainConfig(logger="tensorbord")
    with pytest.raises(ValueError, match="logger must be one of"):
        GoalDistanceTrainConfig(logger="mlflow")
    run = tmp_path / "run"
    assert main(["train", "--data", str(store_dir), "--out", str(run), "--logger", "tensorbord"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "logger must be one of" in err and not run.exists()

    monkeypatch.setitem(sys.modules, "wandb", None)  # as where the extra is not installed
    with pytest.raises(TrackerUnavailableError, match="pip install wandb"):
        train(store_dir, run, fast(1, logger="wandb"), tiny_config(), progress=False)
    assert not run.exists()

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(TrackerUnavailableError, match="pip install tensorboard"):
        resolve_logger("tensorboard")
    assert resolve_logger("auto") == "none" and capsys.readouterr().out.count("\n") == 1
    assert set(LOGGERS) == {"auto", "tensorboard", "wandb", "none"}

"""Videos: upscaling, panels, error maps, MP4/GIF round trips, the planning video, and ``worldvid render`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from worldvid.experiments.render import planning_video
from worldvid.video import error_panel, read_video, side_by_side, upscale, write_video


def moving_square(steps: int = 6, size: int = 16) -> np.ndarray:
    """Flat-shaded frames uint8 [steps, size, size, 3]: a red square moving right over a grey floor."""
    frames = np.full((steps, size, size, 3), (90, 90, 100), np.uint8)
    for t in range(steps):
        frames[t, 5:9, t:t + 4] = (230, 26, 26)
    return frames


def test_upscale_is_nearest() -> None:
    frames = moving_square(2, 8)
    big = upscale(frames, 3)
    assert big.shape == (2, 24, 24, 3) and big.dtype == np.uint8
    assert np.array_equal(big[:, ::3, ::3], frames) and np.array_equal(big[:, 2::3, 1::3], frames)
    with pytest.raises(ValueError):
        upscale(frames, 0)


def test_error_panel_is_black_when_exact_and_visible_otherwise() -> None:
    a = moving_square(3)
    assert not error_panel(a, a).any()
    b = a.copy()
    b[:, 0, 0, 1] += 8  # a small error of 8 grey levels
    err = error_panel(a, b)
    assert err.shape == a.shape and err[:, 0, 0].max() >= 64 and not err[:, 1:].any()
    assert (error_panel(np.zeros_like(a), np.full_like(a, 255)) == 255).all()


def test_side_by_side_layout() -> None:
    a, b = upscale(moving_square(4), 2), upscale(moving_square(4)[:1], 2)  # b: one frame, held
    out = side_by_side([a, b], ["real", "goal"], steps=[5, 6, 7, 8])
    assert out.dtype == np.uint8 and out.shape[0] == 4 and out.shape[2] >= a.shape[2] + b.shape[2]
    # the panels appear unchanged somewhere in each frame: find a's top-left corner
    rows, cols = np.nonzero((out[0] == a[0, 0, 0]).all(-1))
    r, c = rows.min(), cols.min()
    assert np.array_equal(out[:, r:r + 32, c:c + 32], a)
    gap = c  # the layout starts with one gap
    assert all(np.array_equal(out[t, r:r + 32, c + 32 + gap:c + 64 + gap], b[0]) for t in range(4))  # b held
    assert not np.array_equal(out[0, r + 32:], out[1, r + 32:])  # the step number changes
    with pytest.raises(ValueError, match="label"):
        side_by_side([a], ["a", "b"])
    with pytest.raises(ValueError, match="length"):
        side_by_side([a, a[:3]], ["a", "b"])


def test_gif_round_trip_is_exact(tmp_path) -> None:
    frames = side_by_side([upscale(moving_square(5), 4)], ["real"])
    path = write_video(tmp_path / "v.gif", frames, fps=5)
    assert path == tmp_path / "v.gif" and sorted(os.listdir(tmp_path)) == ["v.gif"]  # no temporary left behind
    assert np.array_equal(read_video(path), frames)


def test_mp4_round_trip_is_close_and_padded(tmp_path) -> None:
    frames = upscale(moving_square(7, 9), 2)  # 18x18: not a multiple of 16
    path = write_video(tmp_path / "v.mp4", frames)
    back = read_video(path)
    assert back.shape == (7, 32, 32, 3)
    assert back[:, 20:].mean() < 2 and back[:, :, 20:].mean() < 2  # black padding (up to coding noise)
    error = np.abs(back[:, :18, :18].astype(int) - frames.astype(int))
    assert error.mean() < 3 and error.max() <= 16, (error.mean(), error.max())  # H.264 / yuv420p is lossy, but close
    moved = np.abs(back[1:, :18, :18].astype(int) - back[:-1, :18, :18].astype(int)).mean()
    assert moved > 4 * error.mean()  # and the motion is there
    with pytest.raises(ValueError, match="suffix|end in"):
        write_video(tmp_path / "v.avi", frames)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "w.mp4", frames.astype(np.float32))


def test_planning_video(tmp_path) -> None:
    real = moving_square(5)
    futures = [moving_square(6)[d:] for d in range(4)]  # shrinking futures; no plan for the final frame
    futures[2] = None
    path = planning_video(real, real[-1], futures, tmp_path / "plan.gif", meta={"success": True})
    back = read_video(path)
    assert back.shape[0] == 5 and back.shape[1] > 16 * 8
    assert json.loads((tmp_path / "plan.json").read_text())["success"] is True
    with pytest.raises(ValueError, match="at most one per decision"):
        planning_video(real[:2], real[-1], futures, tmp_path / "bad.gif")


def test_render_command_writes_videos_and_psnr(tmp_path) -> None:
    from worldvid.data.collect import collect
    from worldvid.model import WorldModel, WorldModelConfig

    WorldModel(WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id="worldvid/PointReach-v0",
                                num_steps=1)).save_pretrained(tmp_path / "run" / "model")
    collect("worldvid/PointReach-v0", 2, tmp_path / "store", size=16, progress=False, episodes_per_shard=2)
    command = [sys.executable, "-m", "worldvid.cli", "render", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "store"),
                                   "--episodes", "2", "--rollout-steps", "4", "--out", str(tmp_path / "videos")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["open_loop_ep00000.mp4", "open_loop_ep00001.mp4"]
    for video in videos:
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["video"] == video.name and len(sidecar["psnr"]) == 4 and sidecar["horizon"] == 4
        assert sidecar["env_id"] == "worldvid/PointReach-v0" and np.isfinite(sidecar["mean_psnr"])
        frames = read_video(video)
        assert frames.shape[0] == 5 and frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0  # start + 4 steps
    assert "open_loop_ep00000.mp4" in done.stdout


def test_a_killed_writers_temporary_video_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".clip.mp4.tmp{int(dead.stdout)}"
    live = tmp_path / f".clip.mp4.tmp{os.getppid()}"  # a running writer's (our parent process is alive)
    stale.write_bytes(b"half a video")
    live.write_bytes(b"still being written")
    write_video(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    assert not stale.exists() and live.exists() and (tmp_path / "clip.mp4").is_file()

"""The colour keypoint locator against the simulator's own projection of each object."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldvid.envs import TASKS
from worldvid.keypoints import color_weights, locate_objects


def frames_and_truth(env_id: str, size: int, count: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray, gym.Env]:
    """uint8 [count, H, W, 3] frames, float [count, N, 2] true pixel positions, uint8 [N, 3] colours."""
    env = gym.make(f"worldvid:{env_id}", size=size).unwrapped
    names = list(env.object_colors)
    frames, truth = [], []
    for seed in range(count):
        frame, _ = env.reset(seed=seed)
        for _ in range(seed):  # move a little so positions are off the reset distribution's grid
            frame = env.step(env.scripted_action())[0]
        frames.append(frame)
        truth.append([env.object_pixel_positions()[name] for name in names])
    colors = np.array([env.object_colors[name] for name in names], np.uint8)
    return np.stack(frames), np.array(truth), colors, env


@pytest.mark.parametrize("size", [64, 32])
@pytest.mark.parametrize("env_id", sorted(TASKS))
def test_located_within_a_pixel(env_id: str, size: int) -> None:
    frames, truth, colors, env = frames_and_truth(env_id, size)
    positions, visible = locate_objects(frames, colors)
    assert positions.shape == truth.shape and positions.dtype == np.float32
    assert visible.shape == truth.shape[:-1] and visible.dtype == np.bool_ and visible.all()
    np.testing.assert_allclose(positions, truth, atol=1.0)
    # the goal frame shows the goal object at the goal
    goal_index = list(env.object_colors).index(env.goal_object)
    goal_position, _ = locate_objects(env.goal_frame, colors)
    np.testing.assert_allclose(goal_position[goal_index], env.goal_pixel_position(), atol=1.0)
    env.close()


def test_absent_object_is_not_visible() -> None:
    frames, _, colors, env = frames_and_truth("worldvid/PointReach-v0", 64, count=2)
    blue = (26, 64, 230)  # Push's block, absent from PointReach
    positions, visible = locate_objects(frames, np.array([colors[0], blue]))
    assert visible[:, 0].all() and not visible[:, 1].any()
    assert np.isnan(positions[:, 1]).all() and np.isfinite(positions[:, 0]).all()
    filled, _ = locate_objects(frames, [blue], fill=-1.0)
    assert (filled == -1.0).all()
    floor_only = np.full((32, 32, 3), 204, np.uint8)
    assert not locate_objects(floor_only, colors)[1].any()
    env.close()


def test_batched_torch_matches_numpy_and_value_ranges() -> None:
    frames, truth, colors, env = frames_and_truth("worldvid/Push-v0", 32, count=6)
    batch = torch.from_numpy(frames).reshape(2, 3, 32, 32, 3)  # [B, T, H, W, 3]
    positions, visible = locate_objects(batch, colors)
    assert isinstance(positions, torch.Tensor) and positions.shape == (2, 3, 2, 2)
    assert visible.dtype == torch.bool and visible.all()
    reference, _ = locate_objects(frames, colors)
    np.testing.assert_allclose(positions.reshape(6, 2, 2).numpy(), reference, atol=1e-4)
    unit = batch.float() / 255.0
    np.testing.assert_allclose(locate_objects(unit, colors)[0].numpy(), positions.numpy(), atol=1e-3)
    signed = unit * 2.0 - 1.0
    np.testing.assert_allclose(
        locate_objects(signed, colors, value_range=(-1.0, 1.0))[0].numpy(), positions.numpy(), atol=1e-3
    )
    env.close()


def test_tolerates_imagined_frame_artifacts() -> None:
    frames, truth, colors, env = frames_and_truth("worldvid/Reacher-v0", 64, count=4)
    noisy = frames.astype(np.float32) + np.random.default_rng(0).normal(0.0, 8.0, frames.shape) + 10.0
    positions, visible = locate_objects(np.clip(noisy, 0, 255) / 255.0, colors)
    assert visible.all()
    np.testing.assert_allclose(positions, truth, atol=1.0)
    env.close()


def test_weights_and_validation() -> None:
    frame = np.zeros((4, 5, 3), np.uint8)
    frame[1, 2] = (230, 26, 26)
    weights = color_weights(frame, [(230, 26, 26)])
    assert weights.shape == (1, 4, 5) and weights[0, 1, 2] == 1.0 and weights.sum() == 1.0
    positions, visible = locate_objects(frame, [(230, 26, 26)])
    np.testing.assert_array_equal(positions, [[1.0, 2.0]])
    with pytest.raises(ValueError):
        locate_objects(np.zeros((4, 4)), [(0, 0, 0)])
    with pytest.raises(ValueError):
        locate_objects(frame, [(0, 0)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stays_on_device() -> None:
    frames, _, colors, env = frames_and_truth("worldvid/PointReach-v0", 32, count=2)
    positions, visible = locate_objects(torch.from_numpy(frames).cuda(), torch.from_numpy(colors))
    assert positions.device.type == "cuda" and visible.device.type == "cuda"
    np.testing.assert_allclose(positions.cpu().numpy(), locate_objects(frames, colors)[0], atol=1e-4)
    env.close()
